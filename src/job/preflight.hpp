// Checks a run makes after the input is described and before anything big
// is allocated or any output is created, so a job that cannot fit or cannot
// run fails in seconds with one line instead of an out-of-memory kill (which
// the other ranks see as a dead peer) hours later.
//
//   launch     under Slurm (SLURM_JOB_ID and SLURM_NTASKS set), the world
//              size must be SLURM_NTASKS: a mismatch means mpirun -np was
//              forgotten or wrong and the ranks are not the ones allocated
//   tokens     N_q >= ranks and N_kv >= ranks (every rank needs a token)
//   head dim   D within the kernel's 1..kMaxHeadDim
//   memory     the bytes a rank allocates for the largest chunk, computed
//              with overflow-checked int64 arithmetic, within the budget:
//              memory_limit_mb, or when 0 this rank's share of its node's
//              available memory (MemAvailable, and the cgroup's limit when
//              one is set, divided by the ranks on the node)
//
// Every check runs on every rank and the verdict is agreed (comm/agree.hpp):
// all ranks return, or all throw the same Error.
//
// Includes: <cstdint>, mpi.h (MPI_Comm), io/input_file.hpp (InputInfo),
// job/job_config.hpp (JobConfig), ring/partition.hpp (RingPartitions).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>

#include "io/input_file.hpp"
#include "job/job_config.hpp"
#include "ring/partition.hpp"

namespace ringattn {

// What one rank allocates for the largest chunk (kv_heads_per_chunk K/V
// heads with their query heads), in bytes, each term as its owner reports
// it. hq = hk * (Hq / Hkv), nq and nkv the largest shards of the partition:
struct RankMemory {
  std::int64_t q = 0;       // (hq, nq, D) storage type: the job's q chunk buffer
  std::int64_t ring = 0;    // ring_buffer_bytes: the ring's K/V blocks (K and V are read there)
  std::int64_t packed = 0;  // update_state_workspace_bytes: the kernel's tiles (CPU only)
  std::int64_t state = 0;   // (hq, nq) m2, l + (hq, nq, D) acc, f32 (device: o only)
  std::int64_t lse = 0;     // (hq, nq) f32
  std::int64_t out16 = 0;   // (hq, nq, D) f16 when o is f16: OutputFile's rounding scratch
  std::int64_t io = 0;      // shard_redistribution_bytes: striped rows' exchange scratch
  // --backward: dO and o (hq, nq, D) f32, the home block kept aside, the
  // ring's travelling gradients (ring_gradient_bytes) and dq, the backward
  // kernel's state and tiles (GradState::bytes, fold_bytes).
  std::int64_t gradients = 0;
  std::int64_t total = 0;  // the sum
  bool overflow = false;   // a count did not fit in int64 (the fields are then meaningless)
};

// The run's partitions over `ranks` ranks (ring_partitions): the kind
// cfg.effective_partition(docs.is_packed()) (auto: balanced for packed
// documents, zigzag when causal, else contiguous) under cfg's causal and
// window. Requires info.shape.tokens_q, info.shape.tokens_kv >= ranks.
RingPartitions job_partitions(const JobConfig& cfg, const InputInfo& info, const Documents& docs,
                              int ranks);

// The estimate for the partitions `parts` (job_partitions; their largest
// shards, the same on every rank). Local, no MPI.
RankMemory estimate_rank_memory(const JobConfig& cfg, const InputInfo& info,
                                const RingPartitions& parts);
// estimate_rank_memory(...).total; throws Error(input) naming the shape when
// the byte count overflows int64.
std::int64_t estimate_rank_bytes(const JobConfig& cfg, const InputInfo& info,
                                 const RingPartitions& parts);

// This rank's memory budget in bytes: memory_limit_mb when > 0, else its
// share of the node's available memory. Collective over comm (counts the
// ranks on this node).
std::int64_t rank_memory_budget(MPI_Comm comm, double memory_limit_mb);

// Collective over comm: the Slurm check alone (also part of preflight), for
// callers that want it before opening any file. Error(usage):
//   world size P differs from SLURM_NTASKS=N: ... launch with srun, or mpirun -np N
void check_slurm_world(MPI_Comm comm);

// Collective over comm: all the checks above, agreed. Error classes: the
// Slurm mismatch is `usage`; too few tokens, too large a head dim, an
// overflowing or over-budget memory estimate are `input` (the message names
// the sizes and suggests more ranks or a smaller kv_heads_per_chunk).
// Returns the partitions the estimate was made for (job_partitions over
// comm's ranks), for the run to use: a balanced one is built once.
RingPartitions preflight(MPI_Comm comm, const JobConfig& cfg, const InputInfo& info,
                         const Documents& docs = {});

}  // namespace ringattn
