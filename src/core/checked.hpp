// Byte counts for shapes that a file can declare but no machine can hold: a
// chunked HDF5 dataset of a few KiB can claim 2^61 tokens, and a memory
// estimate computed with plain int64 arithmetic would wrap to a small number
// and pass the budget. Checked arithmetic says that it overflowed instead.
//
// Includes: <cstdint>, <initializer_list>.
#pragma once

#include <cstdint>
#include <initializer_list>

namespace ringattn {

// Products and sums of non-negative counts; once any overflows, `overflow`
// stays set and results are 0 (meaningless).
struct Checked {
  bool overflow = false;
  std::int64_t mul(std::initializer_list<std::int64_t> xs) {
    std::int64_t r = 1;
    for (std::int64_t x : xs)
      if (__builtin_mul_overflow(r, x, &r)) overflow = true;
    return overflow ? 0 : r;
  }
  std::int64_t add(std::initializer_list<std::int64_t> xs) {
    std::int64_t r = 0;
    for (std::int64_t x : xs)
      if (__builtin_add_overflow(r, x, &r)) overflow = true;
    return overflow ? 0 : r;
  }
};

// What byte-count functions return when the count does not fit: callers
// treat it as "cannot be allocated".
inline constexpr std::int64_t kBytesOverflow = INT64_MAX;

}  // namespace ringattn
