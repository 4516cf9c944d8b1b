// Sequence-parallel attention over a ring of ranks (DESIGN.md, ring layer).
// Each rank holds its query shard and its K/V block; the K/V blocks travel
// around the ring, one hop per step, while a fused kernel folds the visiting
// block into the rank's running state:
//
//   step s = 0 .. P-1: the block in hand came from rank (r - s) mod P;
//     start sending it to r+1 and receiving the next from r-1,
//     fold it in (skipped when the causal rule empties every pair),
//     finish the hop.
//
// Every rank makes the same P-1 hops in the same order whatever it computes,
// so uneven shards or skipped steps cannot hang the ring. The state stays
// fp32 across steps and is normalised once at the end.
//
// Ring is what a job drives, whatever computes: CpuRing (cpu_ring.hpp, the
// CPU kernel over MPI) and DeviceRing (device_ring.hpp, the CUDA kernel over
// NCCL or MPI). Both run the one step loop of ring_loop.hpp. A run is two
// calls: home_block() sizes the ring for a layout and hands out the buffer
// this rank's K and V go into (so they are read there, not copied there),
// then run() goes round.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/documents.hpp"
#include "kernel/backward.hpp"
#include "kernel/params.hpp"
#include "kernel/state.hpp"
#include "ring/kv_block.hpp"
#include "ring/partition.hpp"

namespace ringattn {

// Who holds which rows, and the shape of the blocks: one chunk of a job.
struct RingLayout {
  Partition q_part;          // query rows over the ranks
  Partition kv_part;         // key rows (another length for cross-attention)
  KvShape kv;                // the travelling blocks (and the queries' dtype, batch, head_dim)
  std::int64_t heads_q = 1;  // query heads, a multiple of kv.heads_kv (GQA)
  // Packed documents: the kernel masks on their coordinates (q_coordinates,
  // k_coordinates) with their capped window. Default: one dense sequence.
  Documents docs;
  // The blocks carry their gradients too, for run_backward(): home_block()
  // makes room for them behind each block.
  bool gradients = false;

  KvBlock block(int r) const { return KvBlock::of_rank(kv, kv_part, r); }
  Positions q_coordinates(int r) const { return docs.q_coordinates(q_part.positions(r)); }
  Positions kv_coordinates(int r) const { return docs.k_coordinates(kv_part.positions(r)); }
  friend bool operator==(const RingLayout&, const RingLayout&) = default;
};

struct RingOptions {
  bool causal = false;
  Window window;    // keys outside it hidden too (DeviceRing: none yet)
  float scale = 0;  // 0: 1/sqrt(head_dim)
  ComputeType compute = ComputeType::f32;
  int threads = 1;   // the CPU kernel's threads
  CpuVariant cpu;    // the CPU kernel's tile shape and vector path (DeviceRing: unused)
  bool poll = true;  // move the hop along while the kernel computes
  // Called after each ring step (steps done, of P) if set, after stop_after:
  // progress reports, fault injection. Between kernel calls, never inside one.
  std::function<void(int done, int steps)> on_step;
  // Called while a step computes, if set, from the calling thread, at most
  // every kComputeReportInterval seconds: the steps done so far plus the
  // running step's fraction done (an estimate). A long job's progress
  // within a step (a 1M-token step is minutes). CPU rings only.
  std::function<void(double steps_done)> on_compute;
  static constexpr double kComputeReportInterval = 0.5;
  // A run that continues one stopped earlier (Ring::resumable_state): the
  // state holds steps [0, first_step) and the home block holds the block of
  // step first_step, ring_step_source(rank, first_step)'s. 0: a fresh run.
  int first_step = 0;
  // Asked after each step but the last, if set, with the steps done; a
  // collective decision (every rank must answer alike): true ends the run
  // there, its state unfinished (RingStats::stopped), for a checkpoint.
  std::function<bool(int done)> stop_after;
};

struct RingStepStats {
  int source = 0;        // rank whose K/V block was folded in
  bool skipped = false;  // the causal rule emptied every pair
  double compute_s = 0;  // kernel time
  double wait_s = 0;     // time blocked finishing the hop after the kernel: exposed transfer
  double flops = 0;      // attention flops of the visible pairs
  std::uint64_t bytes_sent = 0;      // the hop's send to rank + 1 (0 at the last step)
  std::uint64_t bytes_received = 0;  // the hop's receive from rank - 1 (0 at the last step)
};

struct RingStats {
  std::vector<RingStepStats> steps;  // the steps this run made
  double compute_s = 0, wait_s = 0, total_s = 0, finalize_s = 0, flops = 0;
  std::uint64_t bytes_sent = 0;
  int steps_done = 0;    // steps folded into the state, earlier runs' included
  bool stopped = false;  // stop_after ended the run: no output(), the state is unfinished
};

class Ring {
 public:
  virtual ~Ring() = default;

  // Sizes the ring for layout (its partitions must have a rank per ring
  // member: Error(usage) otherwise) and returns this rank's home block, in
  // host memory: the caller writes K and V there, then calls run() with the
  // same layout. Valid until the next home_block().
  virtual KvBlockRef home_block(const RingLayout& layout) = 0;

  // The ring over the block in home_block(), collective over the ring: q is
  // this rank's queries, dense (batch, heads_q, q_part.local_size(rank),
  // head_dim) in kv.dtype, in host memory; lse: (batch, heads_q, local q
  // rows) f32 natural log, or nullptr. o is in output() afterwards.
  virtual RingStats run(const RingLayout& layout, const void* q, float* lse,
                        const RingOptions& opt) = 0;

  // The last run's o: (batch, heads_q, local q rows, head_dim) f32, host
  // memory, valid until the next home_block().
  virtual const float* output() const = 0;

  // The backward over the block in home_block() (DESIGN.md, backward):
  // collective over the ring. q as for run(); in: this rank's o, lse and dO
  // for those queries (GradInputs' layout), from a forward over the same
  // layout. dq is in grad_q() afterwards and this rank's own block's dK and
  // dV in grad_kv(). A backward run cannot stop between its steps
  // (opt.stop_after and opt.first_step are not for it). Error(usage) where
  // the ring has none.
  virtual RingStats run_backward(const RingLayout& layout, const void* q, const GradInputs& in,
                                 const RingOptions& opt) = 0;
  // The last backward's dq: (batch, heads_q, local q rows, head_dim) f32.
  virtual const float* grad_q() const = 0;
  // The last backward's dK then dV of this rank's block: each (batch,
  // heads_kv, local kv rows, head_dim) f32 (KvBlock::grad_bytes()).
  virtual const float* grad_kv() const = 0;

  // The running state of a stopped run, in host memory, to save it; or, after
  // home_block(), to restore a saved one into before a run with first_step.
  // nullptr: this ring cannot stop inside a run (its state lives elsewhere).
  virtual AttnState* resumable_state() { return nullptr; }
};

}  // namespace ringattn
