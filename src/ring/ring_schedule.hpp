// The ring's schedule, the part of the step loop (ring_loop.hpp) that is
// pure arithmetic: which rank's K/V block is in hand at step s, which one
// arrives next, whether the causal rule empties every (query, key) pair of
// the step, and the kernel's problem for the step. Kept apart from the loop
// so the rules read on their own.
#pragma once

#include <cstdint>

#include "core/positions.hpp"
#include "kernel/params.hpp"
#include "kernel/tile_classify.hpp"
#include "ring/kv_block.hpp"
#include "ring/ring.hpp"

namespace ringattn {

// The rank whose K/V block rank r folds in at step s of a ring of P ranks.
constexpr int ring_step_source(int r, int s, int P) {
  return (r - s + P) % P;
}
// The rank whose block arrives during step s (the source of step s + 1).
constexpr int ring_step_incoming(int r, int s, int P) {
  return (r - s - 1 + 2 * P) % P;
}

// True when no key of the block at k_pos is visible to any query in q: the
// step folds nothing (it still sends and receives).
inline bool ring_step_skipped(const PositionRange& q, const Positions& k_pos,
                              const Visibility& vis) {
  const PositionRange k = k_pos.range();
  return classify_tile(q.min, q.max, k.min, k.max, vis) == TileKind::empty;
}

// The kernel's problem at a step whose K/V block came from rank `source`:
// rank `rank`'s queries at q (dense (B, HQ, nq, D), mask coordinates q_pos) against
// the block at `block` (KvBlock's layout), in opt's scale, mask and compute
// type. The backend adds what is its own (threads, progress polling).
inline AttnParams ring_step_params(const RingLayout& layout, int rank, const void* q,
                                   const Positions& q_pos, const char* block, int source,
                                   const RingOptions& opt) {
  const KvShape& kv = layout.kv;
  const KvBlock b = layout.block(source);
  const std::int64_t nq = layout.q_part.local_size(rank), D = kv.head_dim;
  AttnParams p;
  p.q = {q, layout.heads_q * nq * D, nq * D, D};
  p.k = b.k(block);
  p.v = b.v(block);
  p.dtype = kv.dtype;
  p.batch = kv.batch;
  p.heads_q = layout.heads_q;
  p.heads_kv = kv.heads_kv;
  p.n_q = nq;
  p.n_kv = b.tokens;
  p.head_dim = D;
  p.scale = opt.scale;
  p.causal = opt.causal;
  p.window = layout.docs.window(opt.window);
  p.q_pos = q_pos;
  p.k_pos = layout.kv_coordinates(source);
  p.compute = opt.compute;
  return p;
}

}  // namespace ringattn
