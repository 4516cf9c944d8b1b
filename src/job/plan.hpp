// `ringattn plan`: a model of the ring that predicts, for each rank count, a
// run's per-step compute, hop time, exposed communication, total time,
// efficiency and memory per rank, before an allocation is spent.
//
// The model is the ring loop's own schedule. A run streams chunks (one
// batch, kv_heads_per_chunk K/V heads with their query heads); each chunk
// goes P steps around the ring. At step s rank r folds in the block of rank
// (r - s) mod P while the next block travels, so step s takes
//   max over ranks of max(compute(r, s), hop)     (s < P - 1)
//   max over ranks of compute(r, s)               (the last step: no hop)
// with compute(r, s) = 4 D H_q_chunk · visible pairs(r's queries, the block's
// keys) / rate (the kernel's own flop count; rate is a rank's kernel GFLOP/s)
// and hop = latency + block bytes / bandwidth (K then V, storage type; a
// backward hop also carries the block's f32 dK, dV). Visible pairs are
// counted exactly from the partition's positions (closed forms per run of
// tokens), so contiguous's causal imbalance shows. T1 is the same work on
// one rank: total flops / rate. Memory per rank is preflight's estimate
// (estimate_rank_memory: the kernel's and the ring's own byte counts).
//
// What the model leaves out, stated in docs/scaling.md: I/O (1-2% of a
// long job), the kernel's rate changing with the block size (measure at the
// size you plan for), and contention on a shared network.
//
// Includes: mpi.h (MPI_Comm), <cstdint>, <optional>, <string>, <vector>, <nlohmann/json.hpp>,
// core/dtype.hpp (DType), ring/partition.hpp (PartitionKind).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "ring/partition.hpp"

namespace ringattn {

struct PlanProblem {
  std::int64_t batch = 1, heads = 4, kv_heads = 0, n = 0, n_kv = 0, d = 128;  // 0: as heads, n
  DType dtype = DType::f32;  // storage type: what travels
  bool causal = false;
  bool backward = false;
  std::int64_t kv_heads_per_chunk = 1;
  std::optional<PartitionKind> partition;  // unset: the job's auto choice
};

struct PlanMachine {
  double rate_gflops = 0;     // one rank's kernel rate, GFLOP/s (forward; backward 2.5x flops)
  double bandwidth_gbps = 0;  // link bandwidth, Gbit/s, one direction
  double latency_s = 0;       // per hop
  double memory_node_gb = 0;  // memory per node, GB (1e9 bytes)
  int ranks_per_node = 1;
  int threads = 1;          // per rank (the kernel's per-thread scratch)
  int cores_per_node = 0;   // 0: as many as the ranks' threads; fewer: ranks share cores
                            // and each runs at cores / (ranks_per_node x threads) of the rate
  std::string rate_source;  // "measured ..." or "given"
  std::string link_source = "given";  // or "measured between P ranks"
};

struct PlanRow {
  int ranks = 0;
  std::int64_t tokens_per_rank = 0;  // the largest query shard
  std::string partition;
  double step_compute_s = 0;      // the slowest step's compute (max over ranks), one chunk
  double hop_s = 0;               // one hop of one chunk's block
  double exposed_s = 0;           // communication not hidden, whole run
  double predicted_s = 0;         // whole run
  double t1_s = 0;                // the same work on one rank
  double efficiency = 0;          // t1 / (P · predicted)
  double load_balance = 1;        // max / mean of the ranks' total flops
  std::int64_t memory_bytes = 0;  // per rank
  bool fits = true;
  std::string why;  // why it does not fit / cannot run ("" when it does)
};

struct Plan {
  PlanProblem problem;
  PlanMachine machine;
  std::string partition_reason;
  // Tokens per rank at or above which one hop hides under one step's
  // compute (self-attention, the auto partition's balanced step).
  double min_tokens_to_hide = 0;
  std::vector<PlanRow> rows;
};

// Throws Error(usage) for a problem or machine out of range (N < P is a row
// that cannot run, not an error).
Plan make_plan(const PlanProblem& problem, const PlanMachine& machine,
               const std::vector<int>& ranks);

nlohmann::json plan_json(const Plan& plan);

// The link between the ranks of comm as the ring uses it (every rank sends
// to the next and receives from the previous at once, job/bench_ring.hpp's
// time_hop): latency, a hop of 8 bytes; bandwidth, `bytes` over a hop of
// them less that latency. Collective over comm, which has 2 or more ranks.
struct MeasuredLink {
  double bandwidth_gbps = 0, latency_s = 0;
  std::uint64_t bytes = 0;  // the hop the bandwidth was measured with
};
MeasuredLink measure_link(MPI_Comm comm, std::uint64_t bytes, int iters = 5);

// Bytes of one hop of one chunk's block at `tokens` K/V tokens per rank.
double hop_bytes(const PlanProblem& problem, std::int64_t tokens);

// The kernel's rate on this machine for a block like one step of `problem`
// at `ranks` ranks (tokens capped at 8192 so it takes seconds): GFLOP/s,
// from the kernel benchmark (job/bench_kernel.hpp).
double measure_kernel_rate(const PlanProblem& problem, int tokens, int threads);

}  // namespace ringattn
