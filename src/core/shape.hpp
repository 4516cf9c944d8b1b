// The sizes of one attention problem, and the head-dim limit every layer
// shares. The kernels, the file checks and the CLI's flag ranges all name
// the same numbers; one struct with one spelling for K/V heads and K/V
// tokens keeps them from drifting apart (grouped-query attention: heads_q a
// multiple of heads_kv; cross-attention: tokens_kv may differ from tokens_q).
//
// Includes: <cstdint>.
#pragma once

#include <cstdint>

namespace ringattn {

// The largest head dim D any kernel supports: the CPU kernel's register
// tiles and the CUDA kernel's per-head-dim instantiations (64, 128, 256)
// stop here, so an input, a flag or a benchmark beyond it is refused.
inline constexpr std::int64_t kMaxHeadDim = 256;

// Q is (batch, heads_q, tokens_q, head_dim); K and V are
// (batch, heads_kv, tokens_kv, head_dim).
struct AttnShape {
  std::int64_t batch = 0;
  std::int64_t heads_q = 0;
  std::int64_t heads_kv = 0;  // divides heads_q
  std::int64_t tokens_q = 0;
  std::int64_t tokens_kv = 0;
  std::int64_t head_dim = 0;  // 1 .. kMaxHeadDim

  friend bool operator==(const AttnShape&, const AttnShape&) = default;
};

}  // namespace ringattn
