// Sequence-parallel attention over a ring of ranks (DESIGN.md, ring layer).
// Each rank holds its query shard and its K/V shard; the K/V shards travel
// around the ring, one hop per step, while the fused kernel folds the
// visiting block into the rank's running state:
//
//   step s = 0 .. P-1: the block in hand came from rank (r - s) mod P;
//     start sending it to r+1 and receiving the next from r-1,
//     fold it in (skipped when the causal rule empties every pair),
//     wait for the hop.
//
// Every rank makes the same P-1 hops in the same order whatever it computes,
// so uneven shards or skipped steps cannot hang the ring. K/V travel with
// H_kv heads in their storage type (never expanded to H_q heads). The state
// stays fp32 across steps and is normalised once at the end.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/transport.hpp"
#include "core/dtype.hpp"
#include "kernel/params.hpp"
#include "kernel/state.hpp"
#include "ring/partition.hpp"

namespace ringattn {

// This rank's shards, dense: q (batch, heads_q, q_part.local_size(r), head_dim),
// k and v (batch, heads_kv, kv_part.local_size(r), head_dim), all of dtype.
struct RingShards {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  DType dtype = DType::f32;
  std::int64_t batch = 1, heads_q = 1, heads_kv = 1, head_dim = 0;
};

struct RingOptions {
  bool causal = false;
  float scale = 0;  // 0: 1/sqrt(head_dim)
  ComputeType compute = ComputeType::f32;
  int threads = 1;
  bool poll = true;  // poll the transfer from inside the kernel
  // Called after each ring step (steps done, of P) if set: progress reports.
  void (*on_step)(void* arg, int done, int steps) = nullptr;
  void* on_step_arg = nullptr;
};

struct RingStepStats {
  int source = 0;        // rank whose K/V block was folded in
  bool skipped = false;  // the causal rule emptied every pair
  double compute_s = 0;  // kernel time
  double wait_s = 0;     // time blocked in wait() after the kernel: exposed transfer
  double flops = 0;      // attention flops of the visible pairs
  std::uint64_t bytes_sent = 0;
};

struct RingStats {
  std::vector<RingStepStats> steps;
  double compute_s = 0, wait_s = 0, total_s = 0, finalize_s = 0, flops = 0;
  std::uint64_t bytes_sent = 0;
};

// o: (batch, heads_q, local q rows, head_dim) f32; lse: (batch, heads_q, local
// q rows) f32 natural log, or nullptr. q_part and kv_part must have
// transport.size() ranks (kv_part covers the key length: it differs from
// q_part's for cross-attention).
RingStats ring_attention(Transport& transport, const Partition& q_part, const Partition& kv_part,
                         const RingShards& shards, float* o, float* lse, const RingOptions& opt);

// The same, folding into a caller's state (shaped (batch, heads_q, local q
// rows, head_dim); reset first) and finalising it in place: on return
// state.acc holds o. Saves the separate o buffer where memory is tight.
RingStats ring_attention(Transport& transport, const Partition& q_part, const Partition& kv_part,
                         const RingShards& shards, AttnState& state, float* lse,
                         const RingOptions& opt);

// Bytes of rank r's K/V block as it travels (K then V).
std::uint64_t ring_block_bytes(const Partition& kv_part, int r, const RingShards& shards);

}  // namespace ringattn
