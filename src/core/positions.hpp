// Global token positions of the rows of a block. Causal masking is decided on
// these (key j visible to query i when pos(j) <= pos(i)), so one kernel call
// serves every ring layout:
//   contiguous  rank r's tokens [first, first + n)          -> 1 segment, stride 1
//   zigzag      chunks r and 2P-1-r                         -> 2 segments, stride 1
//   striped     tokens r, r+P, r+2P, ...                    -> 1 segment, stride P
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ringattn {

struct PositionSegment {
  std::int64_t first = 0;   // global position of the segment's first row
  std::int64_t stride = 1;  // > 0: positions increase along the rows
  std::int64_t count = 0;   // rows in the segment
};

// Smallest and largest global position of a block's rows.
struct PositionRange {
  std::int64_t min = 0, max = 0;
};

class Positions {
 public:
  Positions() = default;
  static Positions contiguous(std::int64_t first, std::int64_t count) {
    return strided(first, 1, count);
  }
  static Positions strided(std::int64_t first, std::int64_t stride, std::int64_t count) {
    Positions p;
    p.append({first, stride, count});
    return p;
  }
  // The positions rows[0..n) (ascending, distinct) as runs of consecutive
  // ones, a stride-1 segment each.
  static Positions of_rows(const std::int64_t* rows, std::size_t n);
  Positions& append(PositionSegment s);

  bool empty() const { return segments_.empty(); }
  std::int64_t size() const { return size_; }
  const std::vector<PositionSegment>& segments() const { return segments_; }
  // Position of row i (0 <= i < size()).
  std::int64_t operator[](std::int64_t i) const;
  // Positions of rows [begin, begin + n) into out.
  void fill(std::int64_t begin, std::int64_t n, std::int64_t* out) const;
  // The smallest and largest position of all rows, what the causal rule
  // needs to classify a whole block. Empty positions give {INT64_MAX,
  // INT64_MIN}, a range no rule finds visible.
  PositionRange range() const;

 private:
  std::vector<PositionSegment> segments_;
  std::int64_t size_ = 0;
};

}  // namespace ringattn
