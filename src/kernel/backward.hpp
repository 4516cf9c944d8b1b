// The CPU backward kernel (DESIGN.md, backward): exact gradients of the
// attention the forward computes, flash-attention style, from the forward's
// fp32 o and lse. With D_i = rowsum(dO ∘ O), for every visible tile pair:
//
//   P = exp(S - lse)  (recomputed)      dV += Pᵀ·dO
//   dP = dO·Vᵀ                          dS = scale · P ∘ (dP - D)
//   dQ += dS·K                          dK += dSᵀ·Q
//
// GradState is what the ring carries for this rank's queries across its
// steps, as AttnState is for the forward: the query-side operands packed
// once, and dQ's running sum (fp32, compensated, never rounded to a storage
// type between steps). Each fold adds one K/V block's dK and dV to buffers
// the caller owns (the ring sends them on with their block).
//
// GQA sums dK and dV over the query heads of a group without expanding K/V;
// rows that see no key give zero gradients. Products are fp32 (compute =
// bf16 is refused); q, k and v may be stored in any dtype.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/aligned_buffer.hpp"
#include "kernel/params.hpp"

namespace ringattn {

// This rank's query side, dense f32 (batch, heads_q, n_q, head_dim); lse
// (batch, heads_q, n_q), natural log, -inf where the row saw no key.
struct GradInputs {
  const float* d_o = nullptr;
  const float* o = nullptr;
  const float* lse = nullptr;
};

class GradState {
 public:
  GradState() = default;
  // Packs p's queries (q, q_pos, sizes, tile shape, threads) with in and
  // zeroes dQ; p's keys and values are not read. Later folds must describe
  // the same queries.
  void reset(const AttnParams& p, const GradInputs& in);
  // dk, dv += the gradients of the K/V block p describes, dense f32
  // (batch, heads_kv, n_kv, head_dim); dQ's sum grows.
  void fold(const AttnParams& p, float* dk, float* dv);
  // dq = dQ so far, dense f32 (batch, heads_q, n_q, head_dim).
  void finish(float* dq) const;

  // Bytes reset() allocates for p (the query packs, per-thread dQ sums).
  static std::size_t bytes(const AttnParams& p);
  // Bytes one fold(p) allocates for its tiles.
  static std::size_t fold_bytes(const AttnParams& p);

 private:
  std::int64_t batch_ = 0, heads_ = 0, rows_ = 0, dim_ = 0;
  int bq_ = 0, threads_ = 1;
  std::int64_t qtiles_ = 0;
  AlignedBuffer<float> q_t_;          // (B, H, QT, D, BQ) q · scale · log2 e, transposed
  AlignedBuffer<float> q_;            // (B, H, QT, BQ, D) q
  AlignedBuffer<float> do_t_;         // (B, H, QT, D, BQ) dO transposed
  AlignedBuffer<float> do_;           // (B, H, QT, BQ, D) dO
  AlignedBuffer<float> lse2_;         // (B, H, QT · BQ) lse · log2 e; +inf: no key (and padding)
  AlignedBuffer<float> delta_;        // (B, H, QT · BQ) rowsum(dO ∘ O)
  AlignedBuffer<std::int64_t> qpos_;  // (QT · BQ) the padding repeats the last
  AlignedBuffer<std::int64_t> qmin_, qmax_;  // (QT)
  AlignedBuffer<float> dq_sum_, dq_comp_;    // (threads, B, H, QT, D, BQ) dQ transposed, Kahan
};

// The whole backward of one block: dq (batch, heads_q, n_q, head_dim), dk
// and dv (batch, heads_kv, n_kv, head_dim), dense f32, overwritten.
void attention_backward(const AttnParams& p, const GradInputs& in, float* dq, float* dk, float* dv);

// The backward's flops by the usual convention: 2.5x the forward's (five
// tile products instead of two) over the same visible pairs.
double attention_backward_flops(const AttnParams& p);

}  // namespace ringattn
