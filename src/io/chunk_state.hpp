// A chunk stopped between two ring steps. A stop signal (Slurm's time-limit
// warning) that had to wait for the chunk in hand could wait longer than the
// signal's lead when one chunk is a long sequence; so the job stops at the
// next ring step instead and keeps each rank's fp32 running state of the
// chunk (m2, l, acc: DESIGN.md's state) in a file beside the partial output,
// `.<name>.state`. A resume loads it, reads the K/V block each rank held at
// that step and goes on round the ring from there: the same folds in the
// same order on the same fp32 state, so the result is bit-identical.
//
// The file is written under a temporary name and renamed, holds the partial
// output's resume key, the chunk and the steps done, and is used only when
// all of them match: otherwise it is ignored and removed. Losing it costs
// only the chunk's work so far (the partial's record never counts that chunk).
//
// Every function is collective over comm, and agreed: every rank returns,
// or every rank throws the same Error.
//
// Includes: mpi.h (MPI_Comm), ring/partition.hpp.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>

#include "ring/partition.hpp"

namespace ringattn {

// One rank's state of a chunk, in host memory: m2 and l (heads, rows), acc
// (heads, rows, head_dim), f32, rows its positions under the queries'
// partition (the kernel's AttnState with batch 1; io holds it as numbers).
struct ChunkStateView {
  std::int64_t heads = 0, head_dim = 0;
  float* m2 = nullptr;
  float* l = nullptr;
  float* acc = nullptr;
};

// Which chunk, how far round the ring, and of which run.
struct ChunkStateRecord {
  std::string resume_key;  // the partial output's
  std::int64_t chunk = 0;  // the job's chunk index
  int steps_done = 0;      // ring steps folded into the state
};

// The state file's name for an output (`.<name>.state`, shortened like the
// partial's for a long name).
std::string chunk_state_path(const std::string& target);

// Writes every rank's state s, its rows the rank's positions under q_part.
// Error io when it cannot.
void save_chunk_state(MPI_Comm comm, const std::string& target, const ChunkStateRecord& record,
                      const Partition& q_part, const ChunkStateView& s);

// When a state file for target holds `want`'s key and chunk, loads it into s
// (buffers of the sizes save wrote) and returns its steps_done; else removes any state
// file there and returns 0.
int load_chunk_state(MPI_Comm comm, const std::string& target, const ChunkStateRecord& want,
                     const Partition& q_part, const ChunkStateView& s);

// Removes the state file of target, if any (after the chunk was written).
void remove_chunk_state(MPI_Comm comm, const std::string& target);

}  // namespace ringattn
