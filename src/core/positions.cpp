// Row -> global position maps for blocks made of strided segments.
#include "core/positions.hpp"

#include <algorithm>
#include <cstdint>

#include "core/error.hpp"

namespace ringattn {

Positions Positions::of_rows(const std::int64_t* rows, std::size_t n) {
  Positions p;
  for (std::size_t i = 0; i < n;) {
    std::size_t j = i + 1;
    while (j < n && rows[j] == rows[j - 1] + 1) ++j;
    p.append({rows[i], 1, static_cast<std::int64_t>(j - i)});
    i = j;
  }
  return p;
}

Positions& Positions::append(PositionSegment s) {
  RA_CHECK(s.count >= 0, internal, "position segment with negative count ", s.count);
  RA_CHECK(s.stride > 0, internal, "position segment stride must be > 0, got ", s.stride);
  if (s.count == 0) return *this;
  segments_.push_back(s);
  size_ += s.count;
  return *this;
}

std::int64_t Positions::operator[](std::int64_t i) const {
  for (const auto& s : segments_) {
    if (i < s.count) return s.first + i * s.stride;
    i -= s.count;
  }
  RA_CHECK(false, internal, "row ", i, " beyond the positions' ", size_, " rows");
}

void Positions::fill(std::int64_t begin, std::int64_t n, std::int64_t* out) const {
  RA_CHECK(begin >= 0 && n >= 0 && begin + n <= size_, internal, "rows [", begin, ", ", begin + n,
           ") beyond the positions' ", size_, " rows");
  std::int64_t base = 0;
  for (const auto& s : segments_) {
    for (; n > 0 && begin < base + s.count; ++begin, --n, ++out)
      *out = s.first + (begin - base) * s.stride;
    base += s.count;
    if (n == 0) return;
  }
}

PositionRange Positions::range() const {
  // Positions increase along a segment: its first and last rows bound it.
  PositionRange r{INT64_MAX, INT64_MIN};
  for (const auto& s : segments_) {
    r.min = std::min(r.min, s.first);
    r.max = std::max(r.max, s.first + (s.count - 1) * s.stride);
  }
  return r;
}

}  // namespace ringattn
