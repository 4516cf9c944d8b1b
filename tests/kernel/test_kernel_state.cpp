// The running state across K/V blocks, as the ring uses it: folding blocks in
// any number, size and order gives the one-pass answer; per-block results
// combined with merge give it too; merge's edge cases; results that do not
// depend on the thread count; blocks that must leave the state untouched; and
// the checks that refuse inconsistent parameters.
//
//   attn_test_util.hpp  Problem, Inputs (seeded tensors), run_kernel
//   kernel/state.hpp    AttnState: m2, l, acc
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "kernel/attention.hpp"
#include "kernel/attn_test_util.hpp"
#include "kernel/backward.hpp"
#include "kernel/state.hpp"

namespace ringattn::test {
namespace {

// One K/V block of a whole problem: rows first, first + step, ... (count of
// them), with their global positions (the whole problem's keys sit at 0, 1, 2,
// ...), as a problem of its own.
struct BlockSpec {
  std::int64_t first, count, step = 1;
};

AttnParams kv_block(const AttnParams& whole, const BlockSpec& s) {
  AttnParams b = whole;
  const auto es = static_cast<std::int64_t>(dtype_size(whole.dtype));
  b.k.data = static_cast<const char*>(whole.k.data) + s.first * whole.k.row_stride * es;
  b.v.data = static_cast<const char*>(whole.v.data) + s.first * whole.v.row_stride * es;
  b.k.row_stride *= s.step;
  b.v.row_stride *= s.step;
  b.n_kv = s.count;
  b.k_pos = Positions::strided(s.first, s.step, s.count);
  return b;
}

// The problem every folding test splits: several query tiles at either tile
// size, batch 2, GQA 2, queries at positions 40..339 against keys 0..332 (so
// under causal masking the first rows see 41 keys and the last see all).
Problem whole_problem(bool causal) {
  Problem p = shaped(4, 2, 300, 333, 64, DType::f32, causal);
  p.batch = 2;
  p.q_pos = Positions::contiguous(40, 300);
  p.seed = 700;
  return p;
}

// Kernel output of one problem in float, widened for compare_to_reference.
std::vector<double> widen(const std::vector<float>& x) {
  return {x.begin(), x.end()};
}

// x within 1e-5 of the one-pass answer (same measures as against the reference).
void expect_close_to(const AttnParams& p, const KernelOut& x, const KernelOut& one_pass,
                     const char* what) {
  SCOPED_TRACE(what);
  expect_matches_reference(p, x, RefOut{widen(one_pass.o), widen(one_pass.lse)}, Tolerance{});
}

struct FoldCase {
  std::string name;
  std::vector<BlockSpec> blocks;
  std::vector<int> order;  // the order the blocks are folded in
  bool causal;
};

void PrintTo(const FoldCase& c, std::ostream* os) {
  *os << c.name;
}

std::vector<FoldCase> fold_cases() {
  const std::vector<std::pair<std::string, std::vector<BlockSpec>>> splits = {
      {"one", {{0, 333}}},
      {"halves", {{0, 167}, {167, 166}}},
      {"thirds", {{0, 111}, {111, 111}, {222, 111}}},
      {"uneven", {{0, 1}, {1, 64}, {65, 65}, {130, 7}, {137, 196}}},
      {"ragged", {{0, 200}, {200, 1}, {201, 132}}},
      // Striped blocks: rows r, r + 3, r + 6, ... through a row stride of 3 rows.
      {"striped3", {{0, 111, 3}, {1, 111, 3}, {2, 111, 3}}},
  };
  std::vector<FoldCase> out;
  for (bool causal : {false, true})
    for (const auto& [name, blocks] : splits) {
      const int n = static_cast<int>(blocks.size());
      std::vector<int> forward(static_cast<std::size_t>(n)), reverse, shuffled;
      for (int i = 0; i < n; ++i) forward[static_cast<std::size_t>(i)] = i;
      reverse.assign(forward.rbegin(), forward.rend());
      // Fisher-Yates driven by splitmix64: the same permutation everywhere.
      shuffled = forward;
      for (int i = n - 1; i > 0; --i)
        std::swap(shuffled[static_cast<std::size_t>(i)],
                  shuffled[splitmix64(static_cast<std::uint64_t>(i)) %
                           static_cast<std::uint64_t>(i + 1)]);
      const std::string suffix = causal ? "_causal" : "_full";
      out.push_back({name + "_forward" + suffix, blocks, forward, causal});
      if (n == 1) continue;
      out.push_back({name + "_reverse" + suffix, blocks, reverse, causal});
      if (shuffled != forward && shuffled != reverse)
        out.push_back({name + "_shuffled" + suffix, blocks, shuffled, causal});
    }
  return out;
}

class Folding : public ::testing::TestWithParam<FoldCase> {};

// update_state over the blocks in the case's order, then finalize.
TEST_P(Folding, UpdateStateGivesOnePassAnswer) {
  const FoldCase& c = GetParam();
  const Inputs in(whole_problem(c.causal));
  const AttnParams& whole = in.dense;
  const KernelOut one_pass = run_kernel(whole);

  AttnState s(whole.batch, whole.heads_q, whole.n_q, whole.head_dim);
  for (int i : c.order) update_state(kv_block(whole, c.blocks[static_cast<std::size_t>(i)]), s);
  KernelOut folded;
  folded.o.resize(one_pass.o.size());
  folded.lse.resize(one_pass.lse.size());
  finalize(s, folded.o.data(), folded.lse.data(), whole.threads);
  expect_close_to(whole, folded, one_pass, "folded with update_state");
}

// attention_forward per block, combined with merge (in place, as a ring
// without a carried state would).
TEST_P(Folding, MergeOfBlockResultsGivesOnePassAnswer) {
  const FoldCase& c = GetParam();
  const Inputs in(whole_problem(c.causal));
  const AttnParams& whole = in.dense;
  const KernelOut one_pass = run_kernel(whole);
  const std::int64_t rows = whole.batch * whole.heads_q * whole.n_q;

  KernelOut acc;
  bool first = true;
  for (int i : c.order) {
    const KernelOut part = run_kernel(kv_block(whole, c.blocks[static_cast<std::size_t>(i)]));
    if (first) {
      acc = part;
      first = false;
      continue;
    }
    merge(rows, whole.head_dim, acc.o.data(), acc.lse.data(), part.o.data(), part.lse.data(),
          acc.o.data(), acc.lse.data());
  }
  expect_close_to(whole, acc, one_pass, "merged per-block results");
}

INSTANTIATE_TEST_SUITE_P(Kernel, Folding, ::testing::ValuesIn(fold_cases()), param_name);

// ---- merge edge cases ------------------------------------------------------------

constexpr std::int64_t kD = 5;

struct MergeOut {
  std::vector<float> o;
  float lse;
};

MergeOut merge_one(const std::vector<float>& oa, float a, const std::vector<float>& ob, float b) {
  MergeOut r{std::vector<float>(kD), 0.0f};
  merge(1, kD, oa.data(), &a, ob.data(), &b, r.o.data(), &r.lse);
  return r;
}

const std::vector<float> kOa{0.5f, -1.0f, 0.25f, 3.0f, -0.125f};
const std::vector<float> kOb{-0.75f, 2.0f, 0.5f, -3.5f, 1.0f};

TEST(Merge, MinusInfWithMinusInfGivesZeroAndMinusInf) {
  const MergeOut r = merge_one(kOa, -kInf, kOb, -kInf);
  EXPECT_EQ(r.lse, -kInf);
  for (float x : r.o) EXPECT_EQ(x, 0.0f);
}

TEST(Merge, MinusInfWithFiniteGivesTheFiniteOneExactly) {
  for (float b : {2.5f, -7.0f, 0.0f, 1e4f, -1e4f}) {
    for (bool swap : {false, true}) {
      const MergeOut r = swap ? merge_one(kOb, b, kOa, -kInf) : merge_one(kOa, -kInf, kOb, b);
      EXPECT_EQ(r.lse, b) << "lse_b " << b << (swap ? " (first)" : " (second)");
      for (std::int64_t d = 0; d < kD; ++d) EXPECT_EQ(r.o[d], kOb[d]) << "d " << d;
    }
  }
}

TEST(Merge, HugeDifferencesNeitherOverflowNorLoseTheLargerSide) {
  const float cases[][2] = {{0.0f, 1e4f},    {1e4f, -1e4f},   {-1e4f, 1e4f},         {-1e4f, -2e4f},
                            {3e38f, -3e38f}, {-3e38f, 3e38f}, {1e30f, 1e30f - 1e24f}};
  for (const auto& c : cases) {
    const float a = c[0], b = c[1];
    const MergeOut r = merge_one(kOa, a, kOb, b);
    const std::vector<float>& big = a > b ? kOa : kOb;
    EXPECT_TRUE(std::isfinite(r.lse)) << a << ", " << b;
    EXPECT_EQ(r.lse, std::max(a, b)) << a << ", " << b;  // exp(-|a - b|) underflows to 0
    for (std::int64_t d = 0; d < kD; ++d) EXPECT_EQ(r.o[d], big[d]) << a << ", " << b;
  }
}

// Random rows against the formula of DESIGN.md evaluated in double, with lse
// values spread by ±30 around a centre of magnitude L.
//
// merge computes its weights from a - b alone (1 / (1 + exp(-|a - b|)) for
// the larger side), so o is good to a few ulps at any |lse|; the version it
// replaced took exp(a - lse) with lse rounded to float and lost u·|lse|
// (4.8e-4 at |lse| ~ 1e4). MatchesTheFormulaInDouble is the loose bound that
// version met; ErrorIndependentOfLseMagnitude is the one merge meets now.
double merge_error(double centre, double& max_abs_lse) {
  const std::int64_t rows = 2000, D = 16;
  std::vector<float> oa(rows * D), ob(rows * D), la(rows), lb(rows), o(rows * D), l(rows);
  fill_seeded(oa.data(), DType::f32, oa.size(), 801);
  fill_seeded(ob.data(), DType::f32, ob.size(), 802);
  fill_seeded(la.data(), DType::f32, la.size(), 803, 0, 30.0f);
  fill_seeded(lb.data(), DType::f32, lb.size(), 804, 0, 30.0f);
  for (auto& x : la) x += static_cast<float>(centre);
  for (auto& x : lb) x += static_cast<float>(centre);
  merge(rows, D, oa.data(), la.data(), ob.data(), lb.data(), o.data(), l.data());
  std::vector<double> ro(rows * D), rl(rows);
  max_abs_lse = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    const double a = la[r], b = lb[r];
    const double m = std::max(a, b) + std::log1p(std::exp(-std::fabs(a - b)));
    rl[r] = m;
    max_abs_lse = std::max(max_abs_lse, std::fabs(m));
    for (std::int64_t d = 0; d < D; ++d)
      ro[r * D + d] = std::exp(a - m) * oa[r * D + d] + std::exp(b - m) * ob[r * D + d];
  }
  const Comparison co = compare_to_reference(o.data(), ro.data(), rows * D);
  const Comparison cl = compare_to_reference(l.data(), rl.data(), rows);
  // lse itself is as good as float holds it: a few ulps of its magnitude.
  EXPECT_LE(cl.max_abs_err, 4 * 0x1p-24 * std::max(1.0, max_abs_lse))
      << "worst lse at row " << cl.worst << ": " << cl.worst_value << " vs " << cl.worst_ref;
  std::printf("[  merge   ] lse ~ %g: o err %.2e of max|o| %.2f; worst at %s: %.9g vs %.9g\n",
              centre, co.rel_err, co.scale, where(co.worst, 1, rows, D).c_str(), co.worst_value,
              co.worst_ref);
  return co.rel_err;
}

class MergeAccuracy : public ::testing::TestWithParam<double> {};

TEST_P(MergeAccuracy, MatchesTheFormulaInDouble) {
  double max_lse = 0;
  const double err = merge_error(GetParam(), max_lse);
  EXPECT_LE(err, 4 * 0x1p-24 * (4 + max_lse));
}

// The weights come from exp(-|a - b|) alone, so the error does not grow with |lse|.
TEST_P(MergeAccuracy, ErrorIndependentOfLseMagnitude) {
  double max_lse = 0;
  EXPECT_LE(merge_error(GetParam(), max_lse), 16 * 0x1p-24);
}

std::string lse_name(const ::testing::TestParamInfo<double>& param) {
  std::ostringstream os;
  os << "lse_near_" << static_cast<long>(param.param);
  return os.str();
}

INSTANTIATE_TEST_SUITE_P(Kernel, MergeAccuracy, ::testing::Values(0.0, 10.0, 1e3, 1e4), lse_name);

TEST(Merge, EqualLargeLseStaysFinite) {
  const MergeOut r = merge_one(kOa, 1e4f, kOb, 1e4f);
  EXPECT_FLOAT_EQ(r.lse, 1e4f + static_cast<float>(std::log(2.0)));
  for (std::int64_t d = 0; d < kD; ++d) {
    EXPECT_TRUE(std::isfinite(r.o[d]));
    // Within the accuracy MergeAccuracy documents: 4u·(4 + |lse|)·max|o|.
    EXPECT_NEAR(r.o[d], 0.5f * (kOa[d] + kOb[d]), 4 * 0x1p-24 * (4 + 1e4) * 3.5);
  }
}

// In place (o and lse aliasing o_a and lse_a) gives the same bits as out of
// place; and merge is symmetric, bit for bit (float addition commutes).
TEST(Merge, InPlaceAndSwappedGiveTheSameBits) {
  const std::int64_t rows = 300, D = 16;
  std::vector<float> oa(rows * D), ob(rows * D), la(rows), lb(rows);
  fill_seeded(oa.data(), DType::f32, oa.size(), 811);
  fill_seeded(ob.data(), DType::f32, ob.size(), 812);
  fill_seeded(la.data(), DType::f32, la.size(), 813, 0, 5.0f);
  fill_seeded(lb.data(), DType::f32, lb.size(), 814, 0, 5.0f);
  for (std::int64_t r = 0; r < rows; r += 7) la[r] = -kInf;  // some rows saw no key
  for (std::int64_t r = 0; r < rows; r += 5) lb[r] = -kInf;

  std::vector<float> o(rows * D), l(rows), os(rows * D), ls(rows);
  merge(rows, D, oa.data(), la.data(), ob.data(), lb.data(), o.data(), l.data());
  merge(rows, D, ob.data(), lb.data(), oa.data(), la.data(), os.data(), ls.data());
  EXPECT_EQ(std::memcmp(o.data(), os.data(), o.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(l.data(), ls.data(), l.size() * sizeof(float)), 0);

  merge(rows, D, oa.data(), la.data(), ob.data(), lb.data(), oa.data(), la.data());
  EXPECT_EQ(std::memcmp(o.data(), oa.data(), o.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(l.data(), la.data(), l.size() * sizeof(float)), 0);
  for (float x : oa) ASSERT_FALSE(std::isnan(x));
}

// ---- thread count ------------------------------------------------------------------
//
// Each (batch, head, query tile) is one work item, computed by one thread over
// the key tiles in a fixed order, so the thread count must not change a bit.

struct ThreadCase {
  std::string name;
  DType dtype;
  ComputeType compute;
  bool causal;
};

void PrintTo(const ThreadCase& c, std::ostream* os) {
  *os << c.name;
}

class ThreadCount : public ::testing::TestWithParam<ThreadCase> {};

Problem thread_problem(const ThreadCase& c) {
  Problem p = shaped(6, 2, 777, 333, 80, c.dtype, c.causal);
  p.batch = 2;
  p.compute = c.compute;
  p.q_pos = Positions::contiguous(0, 777);  // keys at 0..332: diagonal, then full tiles
  p.seed = 900;
  return p;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST_P(ThreadCount, OneToFourThreadsGiveIdenticalBits) {
  const Inputs in(thread_problem(GetParam()));
  AttnParams p = in.dense;
  p.threads = 1;
  const KernelOut base = run_kernel(p);
  for (int t = 2; t <= 4; ++t) {
    p.threads = t;
    const KernelOut got = run_kernel(p);
    EXPECT_TRUE(same_bits(got.o, base.o)) << "o differs with " << t << " threads";
    EXPECT_TRUE(same_bits(got.lse, base.lse)) << "lse differs with " << t << " threads";
  }
}

// Folding two blocks with a different thread count each, as ranks sharing a
// node differently would, gives the same state as one thread throughout.
TEST_P(ThreadCount, FoldedStateIndependentOfThreadsPerBlock) {
  const Inputs in(thread_problem(GetParam()));
  const AttnParams& whole = in.dense;
  const BlockSpec blocks[] = {{0, 130}, {130, 203}};
  AttnState base(whole.batch, whole.heads_q, whole.n_q, whole.head_dim);
  for (const auto& b : blocks) {
    AttnParams p = kv_block(whole, b);
    p.threads = 1;
    update_state(p, base);
  }
  for (const auto& [t0, t1] : {std::pair{2, 3}, std::pair{4, 1}, std::pair{3, 2}}) {
    AttnState s(whole.batch, whole.heads_q, whole.n_q, whole.head_dim);
    AttnParams p0 = kv_block(whole, blocks[0]), p1 = kv_block(whole, blocks[1]);
    p0.threads = t0;
    p1.threads = t1;
    update_state(p0, s);
    update_state(p1, s);
    EXPECT_EQ(std::memcmp(s.m2.data(), base.m2.data(), s.m2.size() * sizeof(float)), 0)
        << "m2, threads " << t0 << " then " << t1;
    EXPECT_EQ(std::memcmp(s.l.data(), base.l.data(), s.l.size() * sizeof(float)), 0)
        << "l, threads " << t0 << " then " << t1;
    EXPECT_EQ(std::memcmp(s.acc.data(), base.acc.data(), s.acc.size() * sizeof(float)), 0)
        << "acc, threads " << t0 << " then " << t1;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Kernel, ThreadCount,
    ::testing::Values(ThreadCase{"f32_causal", DType::f32, ComputeType::f32, true},
                      ThreadCase{"f16_full", DType::f16, ComputeType::f32, false},
                      ThreadCase{"bf16compute_causal", DType::bf16, ComputeType::bf16, true}),
    param_name);

// ---- blocks that leave the state untouched ---------------------------------------------

// A copy of the state's three arrays, to compare bit for bit.
struct Snapshot {
  std::vector<float> m2, l, acc;
  explicit Snapshot(const AttnState& s)
      : m2(s.m2.data(), s.m2.data() + s.m2.size()),
        l(s.l.data(), s.l.data() + s.l.size()),
        acc(s.acc.data(), s.acc.data() + s.acc.size()) {}
  bool operator==(const Snapshot& o) const {
    return same_bits(m2, o.m2) && same_bits(l, o.l) && same_bits(acc, o.acc);
  }
};

class Untouched : public ::testing::TestWithParam<bool> {};  // causal

TEST_P(Untouched, EmptyBlockLeavesStateUntouched) {
  const Inputs in(whole_problem(GetParam()));
  const AttnParams& whole = in.dense;
  AttnState s(whole.batch, whole.heads_q, whole.n_q, whole.head_dim);
  update_state(kv_block(whole, {0, 200}), s);
  const Snapshot before(s);

  update_state(kv_block(whole, {200, 0}), s);  // n_kv = 0, valid pointers
  EXPECT_TRUE(Snapshot(s) == before);
  AttnParams none = whole;  // n_kv = 0, no key memory at all
  none.n_kv = 0;
  none.k.data = none.v.data = nullptr;
  none.k_pos = Positions();
  update_state(none, s);
  EXPECT_TRUE(Snapshot(s) == before);
}

INSTANTIATE_TEST_SUITE_P(Kernel, Untouched, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& param) {
                           return std::string(param.param ? "causal" : "full");
                         });

// A block whose every key comes after every query: all tiles empty.
TEST(UntouchedState, CausalFutureBlockLeavesStateBitwiseUntouched) {
  const Inputs in(whole_problem(true));
  const AttnParams& whole = in.dense;
  AttnState s(whole.batch, whole.heads_q, whole.n_q, whole.head_dim);
  const Snapshot fresh(s);
  AttnParams future = kv_block(whole, {0, 333});
  future.k_pos = Positions::contiguous(10000, 333);  // queries sit at 40..339
  update_state(future, s);
  EXPECT_TRUE(Snapshot(s) == fresh) << "a fresh state changed";

  update_state(kv_block(whole, {0, 129}), s);
  const Snapshot before(s);
  update_state(future, s);
  EXPECT_TRUE(Snapshot(s) == before) << "a state that had seen keys changed";
  // Just past the last query (position 339): still every tile empty.
  future.k_pos = Positions::contiguous(340, 333);
  update_state(future, s);
  EXPECT_TRUE(Snapshot(s) == before) << "keys from position 340 on changed the state";
}

// With no key visible at all, finalize gives o = 0 and lse = -inf.
TEST(UntouchedState, NoKeyGivesZeroAndMinusInf) {
  Problem pr = whole_problem(false);
  pr.n_kv = 0;
  const Inputs in(pr);
  const KernelOut got = run_kernel(in.dense);
  for (float x : got.o) ASSERT_EQ(x, 0.0f);
  for (float x : got.lse) ASSERT_EQ(x, -kInf);
}

TEST(UntouchedState, NoQueryRowsIsANoOp) {
  Problem pr = whole_problem(true);
  pr.n_q = 0;
  pr.q_pos = Positions();
  const Inputs in(pr);
  // Sentinels where o and lse would start: with no row, nothing is written
  // (a kernel that wrote one row, or a tile's worth, would overwrite them).
  std::vector<float> o_guard(4096, -7.0f), lse_guard(64, -7.0f);
  ASSERT_NO_THROW(attention_forward(in.dense, o_guard.data(), lse_guard.data()));
  for (float x : o_guard) ASSERT_EQ(x, -7.0f);
  for (float x : lse_guard) ASSERT_EQ(x, -7.0f);
}

// ---- what update_state and attention_forward refuse -----------------------------------

TEST(RefusesShape, StateOfAnotherShape) {
  const Inputs in(whole_problem(true));
  const AttnParams& p = in.dense;
  const std::int64_t B = p.batch, H = p.heads_q, N = p.n_q, D = p.head_dim;
  const std::int64_t shapes[][4] = {
      {B + 1, H, N, D}, {B, H - 1, N, D}, {B, H, N + 1, D}, {B, H, N - 1, D}, {B, H, N, D + 16}};
  for (const auto& sh : shapes) {
    AttnState s(sh[0], sh[1], sh[2], sh[3]);
    EXPECT_THROW(update_state(p, s), Error)
        << "state (" << sh[0] << ", " << sh[1] << ", " << sh[2] << ", " << sh[3] << ")";
  }
}

struct BadParams {
  const char* name;
  void (*spoil)(AttnParams&);
};

class Refuses : public ::testing::TestWithParam<BadParams> {};

TEST_P(Refuses, InvalidParamsWithUsageError) {
  Problem pr = shaped(4, 2, 20, 30, 16);
  const Inputs in(pr);
  AttnParams p = in.dense;
  GetParam().spoil(p);
  auto expect_usage = [&](auto&& call, const char* what) {
    try {
      call();
      ADD_FAILURE() << what << " accepted " << GetParam().name;
    } catch (const Error& e) {
      EXPECT_EQ(e.error_class(), ErrorClass::usage) << what << ": " << e.what();
    }
  };
  std::vector<float> o(4096 * 257), lse(4096);
  expect_usage([&] { attention_forward(p, o.data(), lse.data()); }, "attention_forward");
  expect_usage(
      [&] {
        AttnState s(p.batch, p.heads_q, p.n_q, std::max<std::int64_t>(1, p.head_dim));
        update_state(p, s);
      },
      "update_state");
  std::vector<double> ro(4096 * 257), rl(4096);
  expect_usage([&] { reference_attention(p, ro.data(), rl.data()); }, "reference_attention");
}

INSTANTIATE_TEST_SUITE_P(
    Kernel, Refuses,
    ::testing::Values(BadParams{"heads_not_multiple", [](AttnParams& p) { p.heads_q = 3; }},
                      BadParams{"head_dim_0", [](AttnParams& p) { p.head_dim = 0; }},
                      BadParams{"head_dim_257", [](AttnParams& p) { p.head_dim = 257; }},
                      BadParams{"threads_0", [](AttnParams& p) { p.threads = 0; }},
                      BadParams{"batch_0", [](AttnParams& p) { p.batch = 0; }},
                      BadParams{"negative_n_kv", [](AttnParams& p) { p.n_kv = -1; }},
                      BadParams{"q_pos_wrong_size",
                                [](AttnParams& p) { p.q_pos = Positions::contiguous(0, 19); }},
                      BadParams{"k_pos_wrong_size",
                                [](AttnParams& p) { p.k_pos = Positions::contiguous(0, 31); }},
                      BadParams{"null_keys", [](AttnParams& p) { p.k.data = nullptr; }},
                      BadParams{"scale_nan", [](AttnParams& p) { p.scale = std::nanf(""); }},
                      BadParams{"scale_inf", [](AttnParams& p) { p.scale = kInf; }}),
    param_name);

// The edges of the head-dim range are accepted.
TEST(RefusesShape, HeadDimOneAndMaxAreAccepted) {
  for (std::int64_t d : {std::int64_t{1}, kMaxHeadDim}) {
    Problem pr = shaped(1, 1, 3, 5, d);
    const Inputs in(pr);
    EXPECT_NO_THROW(run_kernel(in.dense)) << "head dim " << d;
  }
}

// The in-call hook (AttnParams::progress): the ring polls its transfer and
// reports progress within a long step there, so it must come from the
// calling thread, often, with a fraction done that grows within [0, 1].
// With one thread the calls cover the whole call (first below half, last
// above); with two, the calling thread's share of the work items depends on
// the scheduler (a loaded machine may give it few), so those runs check
// only where the calls come from and their order.
struct HookCalls {
  int n = 0;
  double first = -1, last = 0;
  bool bad = false;  // another thread, or a fraction out of order
  std::thread::id caller = std::this_thread::get_id();
  static void record(void* arg, double done) {
    auto* c = static_cast<HookCalls*>(arg);
    if (c->first < 0) c->first = done;
    if (std::this_thread::get_id() != c->caller || done < c->last || done > 1) c->bad = true;
    c->last = done;
    ++c->n;
  }
};

Problem hook_problem(int threads) {
  Problem pr;
  pr.heads_q = pr.heads_kv = 2;
  pr.n_q = pr.n_kv = 1500;
  pr.head_dim = 32;
  pr.threads = threads;
  return pr;
}

void expect_calls(const HookCalls& calls, int threads) {
  EXPECT_FALSE(calls.bad) << threads << " threads";
  if (threads == 1) {
    EXPECT_GT(calls.n, 10);
    EXPECT_LT(calls.first, 0.5);
    EXPECT_GT(calls.last, 0.5);
  } else {
    EXPECT_GT(calls.n, 0) << "the calling thread took no work item";
  }
}

TEST(ProgressHook, ForwardReportsAGrowingFractionFromTheCallingThread) {
  for (const int threads : {1, 2}) {
    Inputs in(hook_problem(threads));
    HookCalls calls;
    in.laid.progress = &HookCalls::record;
    in.laid.progress_arg = &calls;
    run_kernel(in.laid);
    expect_calls(calls, threads);
  }
}

TEST(ProgressHook, BackwardReportsAGrowingFractionFromTheCallingThread) {
  for (const int threads : {1, 2}) {
    Inputs in(hook_problem(threads));
    const KernelOut fwd = run_kernel(in.laid);
    std::vector<float> dq(fwd.o.size()), dk(fwd.o.size()), dv(fwd.o.size());
    HookCalls calls;
    in.laid.progress = &HookCalls::record;
    in.laid.progress_arg = &calls;
    attention_backward(in.laid, {fwd.o.data(), fwd.o.data(), fwd.lse.data()}, dq.data(), dk.data(),
                       dv.data());
    expect_calls(calls, threads);
  }
}

}  // namespace
}  // namespace ringattn::test
