// Everything one `ringattn run` needs to know, with the defaults a user gets
// when they give only an input and an output. The CLI fills it from a TOML
// file and flags; the job layer only reads it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "kernel/params.hpp"
#include "ring/partition.hpp"

namespace ringattn {

struct JobConfig {
  // [input]
  std::string input;  // HDF5 file with q, k, v [B, H, N, D]
  std::string q_name = "q", k_name = "k", v_name = "v";
  bool allow_nonfinite = false;  // accept NaN/Inf in q, k, v (default: refuse, naming the first)
  // [output]
  std::string output;           // HDF5 file to write (o, and lse when asked)
  bool lse = false;             // also write lse [B, H, N] f32
  std::string o_dtype = "f32";  // "f32" or "input" (the input's storage type)
  bool overwrite = false;       // replace an existing output
  // [attention]
  bool causal = false;
  float scale = 0;  // 0: 1/sqrt(D)
  ComputeType compute = ComputeType::f32;
  // [ring]
  std::optional<PartitionKind> partition;  // default: zigzag when causal, else contiguous
  std::string transport = "auto";          // "mpi", "nccl" or "auto" (nccl with cuda, else mpi)
  double comm_timeout = 1800;              // seconds a rank may block on a peer; 0 = forever
  // [run]
  int threads = 0;                      // per rank; 0: the rank's share of its node's cores
  std::int64_t kv_heads_per_chunk = 1;  // K/V heads per streamed chunk (with their query heads)
  std::string metrics;                  // write per-rank metrics JSON here ("" = none)
  double progress_interval = 5.0;       // seconds between progress lines in a batch log
  std::string backend = "cpu";          // "cpu" or "cuda" (one GPU per rank)
  double memory_limit_mb = 0;           // per rank; 0: the rank's share of the node's memory
  bool resume = false;                  // continue an interrupted run from its partial output
  double checkpoint_interval = 10;      // s between progress records (0: after every chunk)

  std::string effective_transport() const {
    return transport != "auto" ? transport : backend == "cuda" ? "nccl" : "mpi";
  }
  PartitionKind effective_partition() const {
    return partition ? *partition : default_partition(causal);
  }
};

}  // namespace ringattn
