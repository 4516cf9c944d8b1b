// The running softmax state of DESIGN.md ("The math every layer shares"), in
// fp32, for every query row of a block: it is what the ring carries from step
// to step, folding one K/V block at a time, and normalises once at the end.
//
// Unit note: m is kept in base 2 (m2 = m · log2 e) because the kernel folds
// log2 e into the query scale and uses exp2; lse from finalize() is in the
// natural log, as DESIGN.md and the output files define it.
#pragma once

#include <cstdint>

#include "core/aligned_buffer.hpp"

namespace ringattn {

struct AttnState {
  std::int64_t batch = 0, heads = 0, rows = 0, head_dim = 0;
  AlignedBuffer<float> m2;   // (batch, heads, rows)  running max, base 2; -inf before any key
  AlignedBuffer<float> l;    // (batch, heads, rows)  running sum of exp2(s2 - m2)
  AlignedBuffer<float> acc;  // (batch, heads, rows, head_dim)  running sum of exp2(s2 - m2)·v

  AttnState() = default;
  AttnState(std::int64_t batch, std::int64_t heads, std::int64_t rows, std::int64_t head_dim);
  // Back to "no key seen": m2 = -inf, l = 0, acc = 0.
  void reset();
  std::int64_t num_rows() const { return batch * heads * rows; }
};

}  // namespace ringattn
