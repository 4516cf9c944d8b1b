// The ring's schedule, shared by the CPU ring (ring_attention.cpp) and the
// device ring (cuda/ring_cuda.cpp) so both make the same hops in the same
// order and skip the same steps: which rank's K/V block is in hand at step s,
// which one arrives next, whether the causal rule empties every
// (query, key) pair of the step, and the kernel's problem for the step.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "core/dtype.hpp"
#include "core/positions.hpp"
#include "kernel/params.hpp"
#include "kernel/tile_classify.hpp"
#include "ring/partition.hpp"
#include "ring/ring_attention.hpp"

namespace ringattn {

// Smallest and largest global position of a block.
inline std::pair<std::int64_t, std::int64_t> position_range(const Positions& pos) {
  std::int64_t lo = INT64_MAX, hi = INT64_MIN;
  for (const auto& s : pos.segments()) {
    lo = std::min(lo, s.first);
    hi = std::max(hi, s.first + (s.count - 1) * s.stride);
  }
  return {lo, hi};
}

// The rank whose K/V block rank r folds in at step s of a ring of P ranks.
constexpr int ring_step_source(int r, int s, int P) {
  return (r - s + P) % P;
}
// The rank whose block arrives during step s (the source of step s + 1).
constexpr int ring_step_incoming(int r, int s, int P) {
  return (r - s - 1 + 2 * P) % P;
}

// True when no key of the block at k_pos is visible to any query in
// [q_lo, q_hi]: the step folds nothing (it still sends and receives).
inline bool ring_step_skipped(std::int64_t q_lo, std::int64_t q_hi, const Positions& k_pos,
                              bool causal) {
  const auto [k_lo, k_hi] = position_range(k_pos);
  return classify_tile(q_lo, q_hi, k_lo, k_hi, causal) == TileKind::empty;
}

// The kernel's problem at a step whose K/V block came from rank `source`:
// this rank's nq queries at q (dense (B, HQ, nq, D), positions q_pos) against
// the block at `block` (K then V, each dense (B, HK, nkv, D)), in the shards'
// storage type and opt's scale, mask and compute type. The CPU ring adds its
// threads and the transport's progress hook.
inline AttnParams ring_step_params(const RingShards& sh, const void* q, const char* block,
                                   std::int64_t nq, const Positions& q_pos,
                                   const Partition& kv_part, int source, const RingOptions& opt) {
  const std::int64_t HQ = sh.heads_q, HK = sh.heads_kv, D = sh.head_dim;
  const std::int64_t nkv = kv_part.local_size(source);
  AttnParams p;
  p.q = {q, HQ * nq * D, nq * D, D};
  p.k = {block, HK * nkv * D, nkv * D, D};
  p.v = {block + static_cast<std::size_t>(sh.batch * HK * nkv * D) * dtype_size(sh.dtype),
         HK * nkv * D, nkv * D, D};
  p.dtype = sh.dtype;
  p.batch = sh.batch;
  p.heads_q = HQ;
  p.heads_kv = HK;
  p.n_q = nq;
  p.n_kv = nkv;
  p.head_dim = D;
  p.scale = opt.scale;
  p.causal = opt.causal;
  p.q_pos = q_pos;
  p.k_pos = kv_part.positions(source);
  p.compute = opt.compute;
  return p;
}

}  // namespace ringattn
