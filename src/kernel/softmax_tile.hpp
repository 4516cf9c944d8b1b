// The softmax step of the fused kernel on one score tile, as in DESIGN.md:
// for each row, grow the running max, rescale l and acc by exp(m_old - m_new)
// only when the max grew, turn scores into probabilities and add them to l.
// Scores here are base 2 (the query was scaled by scale·log2 e).
//
// Compiled for AVX-512, AVX2 and a generic target from one portable source
// (GCC vector extensions), picked at run time.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernel/params.hpp"

namespace ringattn {

// The path `native` stands for on this CPU (the widest it has); any other
// isa unchanged.
VectorIsa resolve_isa(VectorIsa isa);
// Whether this CPU executes isa's code (native and generic: always). The
// functions below throw Error(usage) when asked for a path it does not.
bool cpu_runs(VectorIsa isa);

struct SoftmaxTile {
  float* s;        // (rows, bk) scores in, probabilities out; row stride bk
  int rows;        // rows to update
  int bk;          // columns; a multiple of 16
  float* m2;       // (rows) running max, base 2
  float* l_lanes;  // (rows, kLanes) running sum per vector lane: no tile needs a horizontal
                   // sum; the row's l is the sum of its lanes (sum_lanes)
  float* l_comp;   // (rows, kLanes) Kahan terms of l_lanes, or nullptr (plain sum)
  // The rows P·V adds to, which rescale with l when the max grows; each may
  // be nullptr. Row stride head_dim.
  float* acc_partial;  // (rows, head_dim) recent tiles' P·V, not yet folded into acc
  float* acc;          // (rows, head_dim) the running total
  float* acc_comp;     // (rows, head_dim) its Kahan terms
  int head_dim;
  bool round_bf16;  // round probabilities to bf16 (bf16 compute path)
  // The bf16 dot path: scores are s · score_scale (its Q stays unscaled, so
  // bf16 rounds q itself), and the probabilities go to p_bf16 as bf16 bits,
  // (rows, bk), instead of back into s. Needs round_bf16.
  std::uint16_t* p_bf16 = nullptr;
  float score_scale = 1.0f;  // read only with p_bf16; must be > 0
  // Memory the kernel reads next (the V tile of this step's P·V, the next
  // K^T tile), pulled towards L2 a few lines per score vector while the step
  // computes: fetched on demand by the tile products instead, from L3, each
  // tile cost them ~13% (measured on an Intel Xeon with 2 MiB L2). Either may
  // be null.
  struct Prefetch {
    const void* p = nullptr;
    std::size_t bytes = 0;
  } prefetch[2] = {};
};

void softmax_tile(const SoftmaxTile& t, VectorIsa isa = VectorIsa::native);

// Row i's share of a prefetch range of `bytes` spread over `rows` rows: its
// 64-byte lines [first, last); the rows' shares together name each line of
// the range once.
struct LineSpan {
  long first = 0, last = 0;
};
LineSpan prefetch_share(std::size_t bytes, int rows, int i);

// Lanes per row of SoftmaxTile::l_lanes: the widest vector (16 floats).
constexpr int kLanes = 16;
// l_lanes rows from l: lane 0 = l[i], the others 0.
void spread_lanes(const float* l, int rows, float* l_lanes);
// l[i] = sum of row i's lanes.
void sum_lanes(const float* l_lanes, int rows, float* l);

// Masks scores the visibility rule or the block's end hides: s[i][j] = -inf
// when !vis.sees(q_pos[i], k_pos[j]), or when j >= k_valid. s: (rows, bk).
void mask_tile(float* s, int rows, int bk, const std::int64_t* q_pos, const std::int64_t* k_pos,
               int k_valid, const Visibility& vis);

// The backward's elementwise step on one transposed tile (DESIGN.md,
// backward): rows are keys, columns queries. s holds the base-2 scores
// (hidden ones -inf) and becomes P = exp2(s - lse2[c]); dp holds dO·V^T and
// becomes dS = scale · P ∘ (dp - delta[c]). A column whose query saw no key
// has lse2 = +inf, so its P and dS are 0.
struct GradientTile {
  float* s;   // (rows, cols) scores in, P out; row stride cols
  float* dp;  // (rows, cols) dP in, dS out
  int rows;
  int cols;            // a multiple of 16
  const float* lse2;   // (cols) the queries' lse in base 2, +inf for none
  const float* delta;  // (cols) rowsum(dO ∘ O) per query
  float scale;         // the softmax scale, folded into dS
};
void gradient_tile(const GradientTile& t, VectorIsa isa = VectorIsa::native);

// sum += x with Kahan compensation `comp` (sum - comp is the better total),
// for n floats.
void compensated_add(float* sum, float* comp, const float* x, std::int64_t n,
                     VectorIsa isa = VectorIsa::native);

// Vector exp2 for tests: out[i] = 2^x[i] (0 below 2^-126), n a multiple of 16.
void exp2_array(const float* x, float* out, int n, VectorIsa isa = VectorIsa::native);

}  // namespace ringattn
