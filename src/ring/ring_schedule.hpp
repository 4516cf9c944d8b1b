// The ring's schedule, shared by the CPU ring (ring_attention.cpp) and the
// device ring (cuda/ring_cuda.cpp) so both make the same hops in the same
// order and skip the same steps: which rank's K/V block is in hand at step s,
// which one arrives next, and whether the causal rule empties every
// (query, key) pair of the step.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>

#include "kernel/positions.hpp"
#include "kernel/tile_classify.hpp"

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

}  // namespace ringattn
