// Classification of a (query tile, key tile) pair under the visibility rule
// (causal masking and the window), on global positions: the rule the kernel
// uses to skip work and the ring uses to count it.
#pragma once

#include <cstdint>

#include "core/visibility.hpp"

namespace ringattn {

enum class TileKind {
  empty,     // no key visible to any query: skipped, state untouched
  diagonal,  // some visible: mask applied element by element
  full,      // every key visible to every query: no mask
};

// q_min/q_max, k_min/k_max: the smallest and largest global positions in
// the tiles. Without causal masking or a window every pair is full. A tile
// only partly inside the rule is `diagonal` even where the positions it
// holds happen to be all visible (strided positions): the mask decides.
constexpr TileKind classify_tile(std::int64_t q_min, std::int64_t q_max, std::int64_t k_min,
                                 std::int64_t k_max, const Visibility& vis) {
  if (vis.all()) return TileKind::full;
  // Some pair sees: the nearest key to each query side is within reach.
  if (k_min - q_max > vis.right || q_min - k_max > vis.left) return TileKind::empty;
  if (k_max - q_min <= vis.right && q_max - k_min <= vis.left) return TileKind::full;
  return TileKind::diagonal;
}

}  // namespace ringattn
