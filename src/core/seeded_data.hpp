// Data any rank can rebuild: element i of a seeded tensor is a pure function
// of (seed, i) (a counter-based hash, splitmix64), so a rank can make just its
// shard, or check another rank's, without generating the whole tensor.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.hpp"

namespace ringattn {

inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [-1, 1), from the top 24 bits of hash(seed, index).
inline float seeded_uniform(std::uint64_t seed, std::uint64_t index) {
  const std::uint64_t h = splitmix64(splitmix64(seed) ^ index);
  return static_cast<float>(static_cast<std::int64_t>(h >> 40) - (1 << 23)) *
         (1.0f / static_cast<float>(1 << 23));
}

// dst[i] = amplitude · seeded_uniform(seed, first + i), rounded to type t.
void fill_seeded(void* dst, DType t, std::size_t n, std::uint64_t seed, std::uint64_t first = 0,
                 float amplitude = 1.0f);

}  // namespace ringattn
