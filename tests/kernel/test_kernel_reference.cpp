// The fused CPU kernel against the float64 reference.
//
// The full product of every dimension would take hours (the reference costs
// about 2 ns per (query, key, dim) triple), so the sweep is a covering design:
// the (n_q, n_kv) grid, twice (causal and not), with head dim, GQA ratio and
// storage type cycling on periods chosen so that every value of every
// dimension meets every value of every other dimension at least once (the
// test SweepDesign.CoversEveryPair checks it). Masks, layouts, large logits
// and the bf16 compute path have their own smaller suites.
//
//   attn_test_util.hpp   Problem, Inputs (seeded, any layout), check_problem
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "kernel/attn_test_util.hpp"

namespace ringattn::test {
namespace {

// fp32 compute: the kernel's only departures from the reference are fp32
// rounding in the products and the softmax (error ~ u·sqrt(terms), u = 6e-8).
constexpr Tolerance kF32Tol{1e-5, 1e-5};

// ---- the covering sweep --------------------------------------------------------

constexpr std::array<std::int64_t, 5> kLengths{1, 7, 64, 129, 1000};
constexpr std::array<std::int64_t, 6> kHeadDims{1, 16, 64, 80, 128, 256};
constexpr std::array<std::int64_t, 3> kGroups{1, 2, 8};  // heads_q / heads_kv
constexpr std::array<DType, 3> kTypes{DType::f32, DType::f16, DType::bf16};

// Case i = 25·c + 5·a + b (c = causal) has n_q = kLengths[a], n_kv = kLengths[b],
//   head dim  kHeadDims[(a + b + 3c) mod 6]
//   group     kGroups[(i / 2) mod 3]
//   type      kTypes[(a + 2b + c) mod 3]
// (found by searching small linear rules for one that covers every pair).
// heads_kv = 2 so that the query-head -> kv-head map (h / group) is exercised
// (with one kv head every map is right); every seventh case has batch 2.
struct SweepCase {
  Problem problem;
  std::array<int, 6> coords;  // value index per dimension: n_q, n_kv, dim, group, type, causal
};

std::vector<SweepCase> sweep_cases() {
  std::vector<SweepCase> out;
  for (int c = 0; c < 2; ++c)
    for (int a = 0; a < 5; ++a)
      for (int b = 0; b < 5; ++b) {
        const int i = 25 * c + 5 * a + b;
        const int di = (a + b + 3 * c) % 6, gi = (i / 2) % 3, ti = (a + 2 * b + c) % 3;
        Problem p = shaped(2 * kGroups[gi], 2, kLengths[a], kLengths[b], kHeadDims[di], kTypes[ti]);
        p.causal = c == 1;
        p.batch = i % 7 == 3 ? 2 : 1;
        p.seed = 100 + static_cast<std::uint64_t>(i);
        p.name = shape_name(p);
        out.push_back({p, {a, b, di, gi, ti, c}});
      }
  return out;
}

std::vector<Problem> sweep_problems() {
  std::vector<Problem> out;
  for (const auto& c : sweep_cases()) out.push_back(c.problem);
  return out;
}

TEST(SweepDesign, CoversEveryPair) {
  const std::array<int, 6> sizes{5, 5, 6, 3, 3, 2};
  const char* names[] = {"n_q", "n_kv", "head_dim", "group", "type", "causal"};
  const auto cases = sweep_cases();
  double cost = 0;  // (query, key, dim) triples the reference visits
  for (const auto& c : cases) {
    const Problem& p = c.problem;
    cost += static_cast<double>(p.batch * p.heads_q * p.n_q * p.n_kv * p.head_dim);
  }
  std::printf("[  sweep   ] %zu cases, %.2e reference triples\n", cases.size(), cost);
  for (int x = 0; x < 6; ++x)
    for (int y = x + 1; y < 6; ++y) {
      std::set<std::pair<int, int>> seen;
      for (const auto& c : cases) seen.insert({c.coords[x], c.coords[y]});
      EXPECT_EQ(seen.size(), static_cast<std::size_t>(sizes[x] * sizes[y]))
          << "some (" << names[x] << ", " << names[y] << ") pair of values is never tested";
    }
  // Each value in several combinations: at least twice.
  for (int x = 0; x < 6; ++x) {
    std::map<int, int> count;
    for (const auto& c : cases) ++count[c.coords[x]];
    for (const auto& [value, n] : count)
      EXPECT_GE(n, 2) << names[x] << " value #" << value << " tested once only";
  }
}

class Sweep : public ::testing::TestWithParam<Problem> {};
TEST_P(Sweep, MatchesReference) {
  check_problem(GetParam(), kF32Tol);
}
INSTANTIATE_TEST_SUITE_P(Kernel, Sweep, ::testing::ValuesIn(sweep_problems()), param_name);

// ---- long blocks with wide heads: the cases the sweep keeps cheap ------------------

Problem make(std::int64_t b, std::int64_t hq, std::int64_t hkv, std::int64_t nq, std::int64_t nkv,
             std::int64_t d, bool causal, DType t, std::uint64_t seed) {
  Problem p = shaped(hq, hkv, nq, nkv, d, t, causal);
  p.batch = b;
  p.seed = seed;
  p.name = shape_name(p);
  return p;
}

std::vector<Problem> long_problems() {
  return {
      make(1, 1, 1, 1000, 1000, 256, true, DType::f32, 201),
      make(1, 1, 1, 1000, 1000, 256, false, DType::bf16, 202),
      make(1, 8, 1, 1000, 1000, 64, true, DType::f16, 203),
      make(2, 2, 1, 1000, 1000, 128, true, DType::f32, 204),
      make(1, 2, 2, 1000, 129, 256, true, DType::f16, 205),
  };
}

class LongBlocks : public ::testing::TestWithParam<Problem> {};
TEST_P(LongBlocks, MatchesReference) {
  check_problem(GetParam(), kF32Tol);
}
INSTANTIATE_TEST_SUITE_P(Kernel, LongBlocks, ::testing::ValuesIn(long_problems()), param_name);

// ---- global positions: ring layouts and masked rows -------------------------------

// Rank r of P in a striped layout of n tokens: r, r + P, r + 2P, ...
Positions striped(std::int64_t P, std::int64_t r, std::int64_t n) {
  return Positions::strided(r, P, n / P);
}

Problem positioned(std::string name, Positions qp, Positions kp, std::int64_t d, std::int64_t hq,
                   std::int64_t hkv, DType t, std::uint64_t seed, bool causal = true) {
  Problem p = shaped(hq, hkv, qp.size(), kp.size(), d, t, causal);
  p.name = std::move(name);
  p.q_pos = std::move(qp);
  p.k_pos = std::move(kp);
  p.seed = seed;
  return p;
}

std::vector<Problem> position_problems() {
  const DType f32 = DType::f32, f16 = DType::f16, bf16 = DType::bf16;
  return {
      // Zigzag query shard against the whole sequence (one ring of 2).
      positioned("zigzag_P2_r0_vs_all", zigzag_positions(2, 0, 1000),
                 Positions::contiguous(0, 1000), 64, 2, 1, f32, 301),
      positioned("zigzag_P2_r1_vs_all", zigzag_positions(2, 1, 1000),
                 Positions::contiguous(0, 1000), 16, 2, 2, bf16, 302),
      // Zigzag query shard against another rank's zigzag K/V shard (ring of 4):
      // src < r (all of Q sees the first K/V chunk only), src > r (only the
      // second Q chunk sees anything), src = r (two diagonal blocks).
      positioned("zigzag_P4_r3_src0", zigzag_positions(4, 3, 1000), zigzag_positions(4, 0, 1000),
                 80, 2, 1, f32, 303),
      positioned("zigzag_P4_r0_src3", zigzag_positions(4, 0, 1000), zigzag_positions(4, 3, 1000),
                 128, 2, 2, f16, 304),
      positioned("zigzag_P4_r1_src1", zigzag_positions(4, 1, 1000), zigzag_positions(4, 1, 1000),
                 64, 8, 1, f32, 305),
      positioned("zigzag_P4_r2_src1", zigzag_positions(4, 2, 1000), zigzag_positions(4, 1, 1000), 1,
                 4, 2, bf16, 306),
      // Uneven zigzag-like chunks (7 and 129 rows) straddling tile edges.
      positioned("two_segments_uneven", Positions().append({57, 1, 7}).append({300, 1, 129}),
                 Positions::contiguous(0, 429), 256, 2, 1, f16, 307),
      // Striped: every rank holds every P-th token.
      positioned("striped_P3_r0_src2", striped(3, 0, 387), striped(3, 2, 387), 64, 2, 1, f32, 308),
      positioned("striped_P3_r2_src0", striped(3, 2, 387), striped(3, 0, 387), 128, 2, 2, bf16,
                 309),
      positioned("striped_P3_r1_src1", striped(3, 1, 387), striped(3, 1, 387), 16, 8, 1, f32, 310),
      positioned("striped_P4_r3_vs_all", striped(4, 3, 4000), Positions::contiguous(0, 1000), 80, 2,
                 1, f16, 311),
      // Causal off: positions must not matter.
      positioned("striped_noncausal", striped(3, 2, 387), striped(3, 0, 387), 64, 2, 1, f32, 312,
                 false),
      // Rows 0..499 come before every key: fully masked (o = 0, lse = -inf),
      // next to rows that see some keys, inside one tile.
      positioned("half_rows_masked", Positions::contiguous(0, 1000),
                 Positions::contiguous(500, 129), 64, 2, 1, f32, 313),
      positioned("first_rows_masked", Positions::contiguous(497, 7), Positions::contiguous(500, 64),
                 16, 2, 2, f32, 314),
  };
}

class GlobalPositions : public ::testing::TestWithParam<Problem> {};
TEST_P(GlobalPositions, MatchesReference) {
  check_problem(GetParam(), kF32Tol);
}
INSTANTIATE_TEST_SUITE_P(Kernel, GlobalPositions, ::testing::ValuesIn(position_problems()),
                         param_name);

// Every query before every key: o exactly 0, lse exactly -inf, for every row,
// whatever the tiles (one partial tile, several tiles, GQA, batch).
struct MaskedCase {
  std::int64_t n_q, n_kv, d, hq, hkv, b;
};
std::string masked_name(const ::testing::TestParamInfo<MaskedCase>& info) {
  const MaskedCase& c = info.param;
  std::ostringstream os;
  os << "q" << c.n_q << "_kv" << c.n_kv << "_d" << c.d << "_h" << c.hq << "kv" << c.hkv << "_b"
     << c.b;
  return os.str();
}
class FullyMasked : public ::testing::TestWithParam<MaskedCase> {};
TEST_P(FullyMasked, GivesZeroAndMinusInf) {
  const MaskedCase c = GetParam();
  Problem pr = shaped(c.hq, c.hkv, c.n_q, c.n_kv, c.d, DType::f32, true);
  pr.batch = c.b;
  pr.q_pos = Positions::contiguous(0, c.n_q);
  pr.k_pos = Positions::contiguous(c.n_q + 500, c.n_kv);
  const Inputs in(pr);
  const KernelOut got = run_kernel(in.laid);
  for (std::size_t i = 0; i < got.o.size(); ++i)
    ASSERT_EQ(got.o[i], 0.0f) << "at " << where(static_cast<std::int64_t>(i), c.hq, c.n_q, c.d);
  for (std::size_t i = 0; i < got.lse.size(); ++i)
    ASSERT_EQ(got.lse[i], -kInf) << "at " << where(static_cast<std::int64_t>(i), c.hq, c.n_q, 1);
}
INSTANTIATE_TEST_SUITE_P(Kernel, FullyMasked,
                         ::testing::Values(MaskedCase{1, 1, 1, 1, 1, 1},
                                           MaskedCase{129, 64, 16, 2, 1, 1},
                                           MaskedCase{1000, 129, 80, 2, 2, 2},
                                           MaskedCase{7, 1000, 256, 8, 1, 1}),
                         masked_name);

// Visibility is inclusive (key j visible to query i when pos(j) <= pos(i)): a
// query at the first key's position sees exactly that key, so its output is
// that key's value row, exactly (one probability of exactly 1).
TEST(KernelMask, QueryAtFirstKeySeesExactlyThatKey) {
  Problem pr = shaped(1, 1, 3, 100, 80, DType::f32, true);
  pr.q_pos = Positions::contiguous(499, 3);  // 499 sees nothing, 500 one key, 501 two
  pr.k_pos = Positions::contiguous(500, 100);
  const Inputs in(pr);
  const KernelOut got = run_kernel(in.laid);
  const float* v = reinterpret_cast<const float*>(in.v.data());
  for (std::int64_t d = 0; d < pr.head_dim; ++d) {
    EXPECT_EQ(got.o[d], 0.0f);
    EXPECT_EQ(got.o[pr.head_dim + d], v[d]) << "d " << d;
  }
  EXPECT_EQ(got.lse[0], -kInf);
  const RefOut ref = run_reference(in.dense);
  EXPECT_NEAR(got.lse[1], ref.lse[1], 1e-5 * std::max(1.0, std::fabs(ref.lse[1])));
  expect_matches_reference(in.dense, got, ref, kF32Tol);
}

// ---- layouts: arbitrary strides, batch > 1 -------------------------------------------

std::vector<Problem> layout_problems() {
  std::vector<Problem> out;
  const Layout layouts[] = {Layout::token_major, Layout::padded, Layout::packed_kv, Layout::mixed};
  const DType types[] = {DType::f32, DType::f16, DType::bf16};
  int i = 0;
  for (Layout l : layouts)
    for (DType t : types) {
      Problem p;
      p.layout = l;
      p.dtype = t;
      p.batch = 2 + i % 2;
      p.heads_kv = 2;
      p.heads_q = 2 * kGroups[i % 3];
      p.n_q = i % 2 ? 129 : 70;
      p.n_kv = i % 3 ? 200 : 129;
      p.head_dim = kHeadDims[1 + i % 5];
      p.causal = i % 2 == 0;
      p.seed = 400 + static_cast<std::uint64_t>(i);
      p.name = layout_name(l);
      p.name += "_";
      p.name += shape_name(p);
      out.push_back(p);
      ++i;
    }
  // A strided layout with ring positions too.
  Problem z = positioned("tokenmajor_zigzag_P2_r1", zigzag_positions(2, 1, 400),
                         Positions::contiguous(0, 400), 64, 4, 2, DType::f16, 420);
  z.layout = Layout::token_major;
  z.batch = 2;
  out.push_back(z);
  return out;
}

class Layouts : public ::testing::TestWithParam<Problem> {};
TEST_P(Layouts, MatchesReferenceOnDenseCopy) {
  check_problem(GetParam(), kF32Tol);
}
INSTANTIATE_TEST_SUITE_P(Kernel, Layouts, ::testing::ValuesIn(layout_problems()), param_name);

// ---- large logits ----------------------------------------------------------------------
//
// An fp32 score s carries an absolute rounding error of order u·|s| (u = 2^-24:
// q is scaled in fp32, the dot product accumulates in fp32), and a softmax-
// weighted mean of v moves by at most 2·max|δs|·max|v| when its scores move by
// δs. At |s| ~ 1e4 that is ~1e-3, whatever the kernel does: 1e-5 on o is out of
// reach for any fp32 score (measured: 1.3e-3 with |q|, |k| < 30, D = 128,
// scale 1). The bound used is u·M with M = scale·D·a², the largest possible
// |score| (1.15e5 here, so 6.9e-3: 5x above the measurement; the scores
// actually reach ~1.2e4 and their errors add like a random walk, which is
// where the factor 2 and the slack go). What these cases guard is that nothing
// overflows, turns NaN or loses the row (lse stays within 1e-5 relative: it
// is dominated by the max, which fp32 carries to ~1e-7).
struct LogitCase {
  Problem problem;
  Tolerance tol;
};

std::vector<LogitCase> large_logit_cases() {
  std::vector<LogitCase> out;
  auto add = [&](std::string name, std::int64_t nq, std::int64_t nkv, std::int64_t d, float amp,
                 float scale, bool causal, bool negative, DType t) {
    Problem p = shaped(2, 1, nq, nkv, d, t, causal);
    p.name = std::move(name);
    p.qk_amplitude = amp;
    p.scale = scale;
    p.all_scores_negative = negative;
    p.seed = 500 + out.size();
    const double u = 0x1p-24, max_score = static_cast<double>(scale) * static_cast<double>(d) *
                                          static_cast<double>(amp) * static_cast<double>(amp);
    out.push_back({p, {std::max(kF32Tol.o, u * max_score), kF32Tol.lse}});
  };
  // |q|, |k| up to 30, D = 128, scale 1: scores of magnitude ~1e4.
  add("amp30_d128_q129_kv1000", 129, 1000, 128, 30.0f, 1.0f, false, false, DType::f32);
  add("amp30_d128_q1000_causal_f16", 1000, 1000, 128, 30.0f, 1.0f, true, false, DType::f16);
  // A large softmax scale instead of large inputs.
  add("scale300_d16_q200_kv300", 200, 300, 16, 2.0f, 300.0f, false, false, DType::f32);
  // Every score about -2.9e4: the running max starts far below zero (a state
  // that started its max at 0 instead of -inf would underflow l to 0 here).
  add("all_negative_amp30_d128_causal", 129, 200, 128, 30.0f, 1.0f, true, true, DType::f32);
  add("all_negative_amp30_d256_bf16", 64, 129, 256, 30.0f, 1.0f, false, true, DType::bf16);
  return out;
}

void PrintTo(const LogitCase& c, std::ostream* os) {
  *os << c.problem.name;
}

class LargeLogits : public ::testing::TestWithParam<LogitCase> {};
TEST_P(LargeLogits, MatchesReference) {
  check_problem(GetParam().problem, GetParam().tol);
}
INSTANTIATE_TEST_SUITE_P(Kernel, LargeLogits, ::testing::ValuesIn(large_logit_cases()),
                         [](const ::testing::TestParamInfo<LogitCase>& param) {
                           return param.param.problem.name;
                         });

// ---- windows ----------------------------------------------------------------------------
//
// Key j visible to query i when i - L <= j <= i + R (causal caps R at 0):
// left only, both sides, a window of 0 (the diagonal only), one wider than
// the block, causal with a window; GQA, f16, cross-attention with shifted
// and strided positions (a ring step's), on every tile shape and vector
// path this CPU runs, so masked, empty and full tiles all occur.
std::vector<Problem> window_problems() {
  struct W {
    const char* name;
    Window w;
    bool causal;
  };
  const W windows[] = {{"left5", {5, kUnboundedWindow}, false},
                       {"left300", {300, kUnboundedWindow}, true},
                       {"l17_r40", {17, 40}, false},
                       {"zero", {0, 0}, false},
                       {"wider_than_block", {5000, 5000}, false},
                       {"causal_l64", {64, 7}, true},
                       {"right_only_9", {kUnboundedWindow, 9}, false}};
  std::vector<Problem> out;
  std::uint64_t seed = 900;
  for (const W& w : windows)
    for (int shape = 0; shape < 3; ++shape) {
      Problem p = shape == 0   ? make(1, 4, 2, 700, 700, 64, w.causal, DType::f32, ++seed)
                  : shape == 1 ? make(2, 2, 1, 129, 1000, 80, w.causal, DType::f16, ++seed)
                               : make(1, 2, 2, 300, 600, 16, w.causal, DType::f32, ++seed);
      if (shape == 1) p.q_pos = Positions::contiguous(800, 129);  // the block's last queries
      if (shape == 2) {  // a striped ring step: queries 1 mod 2, keys 0 mod 2 shifted
        p.q_pos = Positions::strided(1, 2, 300);
        p.k_pos = Positions::strided(100, 2, 600);
      }
      p.window = w.w;
      p.name = std::string("window_") + w.name + "_" + p.name;
      out.push_back(p);
    }
  return out;
}

class Windows : public ::testing::TestWithParam<Problem> {};
TEST_P(Windows, MatchesReferenceOnEveryVariant) {
  for (const CpuVariant& v : all_cpu_variants()) {
    if (!cannot_run(v).empty()) continue;
    Problem p = GetParam();
    p.variant = v;
    SCOPED_TRACE(variant_name(v));
    check_problem(p, kF32Tol);
  }
}
INSTANTIATE_TEST_SUITE_P(Kernel, Windows, ::testing::ValuesIn(window_problems()), param_name);

// ---- bf16 compute ----------------------------------------------------------------------
//
// ComputeType::bf16 rounds q, k, v and the probabilities p to bf16 (8
// significant bits: relative error <= u = 2^-9 per operand, round to nearest)
// and accumulates in fp32. The reference sees the unrounded values. Errors,
// relative to max|v| (see Tolerance::o_against_values):
//   v rounded:       <= u                     (o is a convex combination of v)
//   p rounded:       <= 2u                    (l sums the same rounded p)
//   scores:          δs = scale·Σ q_d k_d (ε_q + ε_k); with |q|, |k| < 2 and
//                    scale = 1/sqrt(D) its rms is ~2e-3 and its largest value
//                    over a test's ~1e6 scores ~5 rms = 1e-2, moving o by at
//                    most 2·max|δs| = 2e-2
// Sum: 3u + 2e-2 ≈ 2.6e-2, so o is held to 3e-2·max|v|. lse moves by the
// weighted mean of δs plus log(1 + 2u) from l: ~1e-2 + 4e-3, held to 2e-2.
// Measured over 864 seeded cases (every length pair, every head dim, causal
// or not, all storage types): worst o 7.2e-3·max|v| (4x margin), worst lse
// 6.5e-3 (3x margin). Against max|ref| a first run of such cases reached
// 4.1e-2 (D = 1, flat softmax over 129 keys, where |o| ~ 0.1·max|v|): the
// reason o is measured against max|v| here.
constexpr Tolerance kBf16Tol{3e-2, 2e-2, true};

std::vector<Problem> bf16_problems_one_path() {
  std::vector<Problem> out;
  int i = 0;
  for (std::int64_t n : kLengths)
    for (bool causal : {false, true}) {
      const auto k = static_cast<std::size_t>(i);
      Problem p;
      p.compute = ComputeType::bf16;
      p.n_q = n;
      p.n_kv = kLengths[(k + 2 + k / 5) % kLengths.size()];
      p.head_dim = kHeadDims[k % kHeadDims.size()];
      p.heads_kv = 2;
      p.heads_q = 2 * kGroups[k % 3];
      p.dtype = kTypes[(k / 2) % 3];
      p.causal = causal;
      p.seed = 600 + static_cast<std::uint64_t>(i);
      p.name = "bf16compute_";
      p.name += shape_name(p);
      out.push_back(p);
      ++i;
    }
  // Long rows at the widest head: where score errors have the most terms.
  Problem w = make(1, 2, 1, 129, 1000, 256, true, DType::f32, 620);
  w.compute = ComputeType::bf16;
  w.name = "bf16compute_" + w.name;
  out.push_back(w);
  return out;
}

// Each case runs on every way of multiplying bf16 tiles: AMX tiles
// (tdpbf16ps, skipped without AMX-BF16), dot products (vdpbf16ps, skipped
// without AVX512_BF16) and fp32 products of the rounded values; the bound
// above covers all (amx and dot round q, not q·scale).
std::vector<Problem> bf16_problems() {
  std::vector<Problem> out;
  for (const Bf16Products products : {Bf16Products::amx, Bf16Products::dot, Bf16Products::fp32})
    for (Problem p : bf16_problems_one_path()) {
      p.variant.bf16 = products;
      p.name.insert(std::string("bf16compute_").size(),
                    std::string(bf16_products_name(products)) + "_");
      out.push_back(p);
    }
  return out;
}

class Bf16Compute : public ::testing::TestWithParam<Problem> {};
TEST_P(Bf16Compute, MatchesReference) {
  if (const std::string why = cannot_run(GetParam().variant); !why.empty()) GTEST_SKIP() << why;
  check_problem(GetParam(), kBf16Tol);
}
INSTANTIATE_TEST_SUITE_P(Kernel, Bf16Compute, ::testing::ValuesIn(bf16_problems()), param_name);

// A long block whose keys and values take only a few distinct rows (as in a
// genome tokenised into k-mers): the same products are summed tens of
// thousands of times, so fp32 rounding does not cancel. Plain accumulation
// of P·V drifted to ~6e-5 of the output at 32000 keys; the kernel folds its
// partial sums with Kahan compensation and must stay within 1e-5.
TEST(LongLowVariety, StaysWithinFp32Tolerance) {
  const std::int64_t nq = 24, nkv = 32000, D = 64, distinct = 16;
  std::vector<float> q(static_cast<std::size_t>(nq * D)), rows_k(distinct * D),
      rows_v(distinct * D);
  fill_seeded(q.data(), DType::f32, q.size(), 901);
  fill_seeded(rows_k.data(), DType::f32, rows_k.size(), 902);
  fill_seeded(rows_v.data(), DType::f32, rows_v.size(), 903);
  std::vector<float> k(static_cast<std::size_t>(nkv * D)), v(k.size());
  for (std::int64_t j = 0; j < nkv; ++j) {
    const std::int64_t r = (j * 7 + j / 5) % distinct;  // uneven, repeating pattern
    std::copy_n(rows_k.data() + r * D, D, k.data() + j * D);
    std::copy_n(rows_v.data() + r * D, D, v.data() + j * D);
  }
  AttnParams p = AttnParams::dense(q.data(), k.data(), v.data(), DType::f32, 1, 1, 1, nq, nkv, D);
  std::vector<float> o(q.size()), lse(static_cast<std::size_t>(nq));
  std::vector<double> ro(q.size()), rl(lse.size());
  attention_forward(p, o.data(), lse.data());
  reference_attention(p, ro.data(), rl.data());
  const Comparison c = compare_to_reference(o.data(), ro.data(), std::ssize(o));
  EXPECT_LE(c.rel_err, 1e-5) << "worst o[" << c.worst << "] = " << c.worst_value << ", float64 "
                             << c.worst_ref;
}

}  // namespace
}  // namespace ringattn::test
