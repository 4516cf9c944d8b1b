// The float64 reference: attention computed the obvious way, row by row in
// double, on the values as stored (f16/bf16 inputs widened exactly). Tests
// compare the fused kernel and the ring with it.
#pragma once

#include <cstdint>

#include "kernel/params.hpp"

namespace ringattn {

// o: (batch, heads_q, n_q, head_dim), lse: (batch, heads_q, n_q) or nullptr.
// Fully masked rows: o = 0, lse = -inf. Ignores p.compute and p.threads.
void reference_attention(const AttnParams& p, double* o, double* lse);

// The gradients of that attention for the upstream gradient d_o, dense f32
// (batch, heads_q, n_q, head_dim), in float64 with its own o and lse: dq
// (batch, heads_q, n_q, head_dim), dk and dv (batch, heads_kv, n_kv,
// head_dim), overwritten. O(n_q · n_kv · head_dim) per head, for tests.
void reference_attention_backward(const AttnParams& p, const float* d_o, double* dq, double* dk,
                                  double* dv);

}  // namespace ringattn

namespace ringattn {

// How far x is from ref: the largest |x - ref| against the output's scale
// (the largest |ref|, at least 1e-30), and where. Non-finite x counts as
// infinitely far; -inf in both (an lse of a fully masked row) counts as equal.
struct Comparison {
  double max_abs_err = 0;
  double scale = 0;
  double rel_err = 0;  // max_abs_err / scale
  std::int64_t worst = -1;
  double worst_value = 0, worst_ref = 0;
};
Comparison compare_to_reference(const float* x, const double* ref, std::int64_t n);

// The least scale a gradient's error is measured against, where its own
// largest |ref| is smaller. A gradient can be exactly 0 (a row with one
// visible key has P = 1 and dS = 0), and fp32 rounding then fails any bound
// relative to it alone; the floor is a twentieth of one term of the sums,
// scale · max|dO| · max|v| · max(max|q|, max|k|): the rounding of the sums
// measured on such rows stays below 1e-4 of it, and it stays below max|ref|
// on most problems (it only loosens the bound where gradients are small
// against their terms). From the maxima, or from p's tensors and d_o (n_do
// floats).
double gradient_error_floor(double scale, double max_do, double max_v, double max_q, double max_k);
double gradient_error_floor(const AttnParams& p, const float* d_o, std::int64_t n_do);

}  // namespace ringattn
