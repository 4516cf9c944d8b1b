// Classification of a (query tile, key tile) pair under causal masking, on
// global positions: the rule the kernel uses to skip work and the ring uses
// to count it.
#pragma once

#include <cstdint>

namespace ringattn {

enum class TileKind {
  empty,     // no key visible to any query: skipped, state untouched
  diagonal,  // some visible: mask applied element by element
  full,      // every key visible to every query: no mask
};

// q_min/q_max, k_min/k_max: the smallest and largest global positions in
// the tiles. Without causal masking every non-empty pair is full.
constexpr TileKind classify_tile(std::int64_t q_min, std::int64_t q_max, std::int64_t k_min,
                                 std::int64_t k_max, bool causal) {
  if (!causal) return TileKind::full;
  if (k_min > q_max) return TileKind::empty;
  if (k_max <= q_min) return TileKind::full;
  return TileKind::diagonal;
}

}  // namespace ringattn
