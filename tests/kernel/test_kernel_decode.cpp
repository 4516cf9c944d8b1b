// The streaming decode kernel (decode_attention) against the float64
// reference: a sweep of query rows, head groups, head dims, key counts and
// storage types, each case with one of the masks (causal with the queries
// after, inside or before the keys; windows; rows that see nothing), one of
// the strided layouts and, in half the cases, key positions in pages of 7
// picked from a longer sequence out of order. Each case also checks that 1
// and 2 threads give the same bits and that the portable path agrees. Then:
// long low-entropy blocks (2^20 keys of 2 or 5 distinct rows), agreement with
// attention_forward, decode_suits, the workspace estimate, empty blocks, the
// bf16 compute hand-over and the progress callback.
//
//   attn_test_util.hpp    Problem, Inputs (seeded, any layout), run_reference,
//                         expect_matches_reference
//   kernel/decode.hpp     decode_attention, the kernel under test
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/checked.hpp"
#include "core/cpu.hpp"
#include "core/dtype.hpp"
#include "core/positions.hpp"
#include "core/seeded_data.hpp"
#include "kernel/attention.hpp"
#include "kernel/attn_test_util.hpp"
#include "kernel/decode.hpp"
#include "kernel/reference.hpp"

namespace ringattn::test {
namespace {

// fp32 compute: the same bound as the main kernel's (max|o - ref| <= 1e-5
// max|ref|, lse within 1e-5 of max(1, max|ref|)).
constexpr Tolerance kF32Tol{1e-5, 1e-5};

KernelOut run_decode(const AttnParams& p) {
  KernelOut r;
  r.o.assign(static_cast<std::size_t>(p.batch * p.heads_q * p.n_q * p.head_dim), -1.0f);
  r.lse.assign(static_cast<std::size_t>(p.batch * p.heads_q * p.n_q), -1.0f);
  decode_attention(p, r.o.data(), r.lse.data());
  return r;
}

bool same_bits(const KernelOut& a, const KernelOut& b) {
  return a.o.size() == b.o.size() && a.lse.size() == b.lse.size() &&
         std::memcmp(a.o.data(), b.o.data(), a.o.size() * sizeof(float)) == 0 &&
         std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * sizeof(float)) == 0;
}

// Key positions of a paged cache: pages of 7 consecutive positions, this
// block holding every third page of a sequence three times its length, the
// even-numbered of them ascending and then the odd-numbered descending (so
// positions are not monotone across segments). The last page may be short.
Positions paged_positions(std::int64_t n_kv, std::int64_t first) {
  constexpr std::int64_t kPage = 7;
  const std::int64_t pages = (n_kv + kPage - 1) / kPage;
  std::vector<std::int64_t> order;
  for (std::int64_t j = 0; j < pages; j += 2) order.push_back(j);
  for (std::int64_t j = (pages - 1) / 2 * 2 + 1; j >= 1; j -= 2)
    if (j < pages) order.push_back(j);
  Positions pos;
  std::int64_t left = n_kv;
  for (const std::int64_t j : order) {
    // Page j of the block is page 3j + 1 of the sequence; only the block's
    // last page (j = pages - 1) is short.
    const std::int64_t count = j == pages - 1 ? n_kv - (pages - 1) * kPage : kPage;
    pos.append({first + (3 * j + 1) * kPage, 1, count});
    left -= count;
  }
  EXPECT_EQ(left, 0);
  return pos;
}

// The masks of the sweep, on global positions. L is the extent of the key
// positions (keys lie in [key_first, key_first + L)).
enum class Mask {
  none,
  causal_after,         // decode proper: every query after every key
  causal_inside,        // queries spread inside the keys: each sees a prefix
  causal_before,        // every query before every key: o = 0, lse = -inf
  window_inside,        // a two-sided window around queries inside the keys
  causal_window_after,  // queries after the keys, seeing the last few dozen only
  narrow_window,        // window {1, 1} on spread queries: many rows see nothing
};
constexpr int kMasks = 7;
const char* mask_name(Mask m) {
  switch (m) {
    case Mask::none:
      return "none";
    case Mask::causal_after:
      return "causalafter";
    case Mask::causal_inside:
      return "causalinside";
    case Mask::causal_before:
      return "causalbefore";
    case Mask::window_inside:
      return "windowinside";
    case Mask::causal_window_after:
      return "causalwindowafter";
    case Mask::narrow_window:
      return "narrowwindow";
  }
  return "?";
}

constexpr std::array<Layout, 5> kLayouts{Layout::dense, Layout::token_major, Layout::padded,
                                         Layout::packed_kv, Layout::mixed};

// Sets p's masks and positions; keys paged or 0, 1, 2, ... (shifted past the
// queries for causal_before).
void apply_mask(Problem& p, Mask m, bool paged) {
  const std::int64_t key_first = m == Mask::causal_before ? p.n_q + 10 : 0;
  const std::int64_t L = paged ? 3 * ((p.n_kv + 6) / 7) * 7 : p.n_kv;
  if (paged)
    p.k_pos = paged_positions(p.n_kv, key_first);
  else if (key_first != 0)
    p.k_pos = Positions::contiguous(key_first, p.n_kv);
  const std::int64_t inside_first = key_first + L / 4;
  const std::int64_t inside_stride = std::max<std::int64_t>(1, L / (2 * p.n_q));
  switch (m) {
    case Mask::none:
      break;
    case Mask::causal_after:
      p.causal = true;
      p.q_pos = Positions::contiguous(key_first + L + 2, p.n_q);
      break;
    case Mask::causal_inside:
      p.causal = true;
      p.q_pos = Positions::strided(inside_first, inside_stride, p.n_q);
      break;
    case Mask::causal_before:
      p.causal = true;
      p.q_pos = Positions::contiguous(0, p.n_q);
      break;
    case Mask::window_inside:
      p.window = {L / 8 + 1, L / 8 + 1};
      p.q_pos = Positions::strided(inside_first, inside_stride, p.n_q);
      break;
    case Mask::causal_window_after:
      p.causal = true;
      p.window = {37, kUnboundedWindow};
      p.q_pos = Positions::contiguous(key_first + L + 2, p.n_q);
      break;
    case Mask::narrow_window:
      p.window = {1, 1};
      p.q_pos = Positions::strided(key_first, 5, p.n_q);
      break;
  }
}

// ---- the sweep ----------------------------------------------------------------

constexpr std::array<std::int64_t, 3> kQueryRows{1, 3, 17};
constexpr std::array<std::array<std::int64_t, 2>, 3> kHeads{{{4, 4}, {8, 2}, {6, 3}}};
constexpr std::array<std::int64_t, 5> kHeadDims{1, 7, 64, 128, 256};
constexpr std::array<std::int64_t, 4> kKeys{1, 5, 1000, 4099};
constexpr std::array<DType, 3> kTypes{DType::f32, DType::f16, DType::bf16};

// The full product of query rows, heads, head dims, key counts and types (540
// cases). Case i takes mask i mod 7, layout (i / 7) mod 5 and paged keys when
// (i / 35) is odd: with the product's strides (3, 12, 60, 180) every mask
// meets every value of every dimension.
std::vector<Problem> sweep_cases() {
  std::vector<Problem> out;
  int i = 0;
  for (const std::int64_t nq : kQueryRows)
    for (const auto& heads : kHeads)
      for (const std::int64_t d : kHeadDims)
        for (const std::int64_t nkv : kKeys)
          for (const DType t : kTypes) {
            Problem p = shaped(heads[0], heads[1], nq, nkv, d, t);
            p.batch = i % 11 == 0 ? 2 : 1;
            p.seed = static_cast<std::uint64_t>(i + 1);
            const auto mask = static_cast<Mask>(i % kMasks);
            p.layout = kLayouts[static_cast<std::size_t>(i / 7 % 5)];
            const bool paged = i / 35 % 2 == 1;
            apply_mask(p, mask, paged);
            std::ostringstream os;
            os << "q" << nq << "_h" << heads[0] << "kv" << heads[1] << "_d" << d << "_kv" << nkv
               << "_" << dtype_name(t) << (p.batch > 1 ? "_b2" : "") << "_" << mask_name(mask)
               << "_" << layout_name(p.layout) << (paged ? "_paged" : "");
            p.name = os.str();
            out.push_back(p);
            ++i;
          }
  return out;
}

class DecodeSweep : public ::testing::TestWithParam<Problem> {};

// Against the reference, on 2 threads; 1 thread gives the same bits, and the
// portable path (p.cpu.isa = generic) is within the same bound.
TEST_P(DecodeSweep, MatchesReferenceAndIsThreadInvariant) {
  const Problem& pr = GetParam();
  Inputs in(pr);
  const RefOut ref = run_reference(in.dense);
  in.laid.threads = 2;
  const KernelOut two = run_decode(in.laid);
  const Errors e = expect_matches_reference(in.dense, two, ref, kF32Tol);
  in.laid.threads = 1;
  const KernelOut one = run_decode(in.laid);
  EXPECT_TRUE(same_bits(one, two)) << "1 and 2 threads differ";
  in.laid.cpu.isa = VectorIsa::generic;
  const KernelOut portable = run_decode(in.laid);
  const Errors eg = expect_matches_reference(in.dense, portable, ref, kF32Tol);
  std::printf("[  errors  ] o %.2e  lse %.2e  portable o %.2e  lse %.2e\n", e.o, e.lse, eg.o,
              eg.lse);
}

INSTANTIATE_TEST_SUITE_P(Grid, DecodeSweep, ::testing::ValuesIn(sweep_cases()), param_name);

// Every mask, layout and key-position kind meets every value of every
// dimension of the product (the rule's claim), and many-segment key positions
// (1000 and 4099 keys in pages of 7) are a quarter of the cases.
TEST(DecodeSweepDesign, CoversEveryPairWithTheVariants) {
  const std::vector<Problem> cases = sweep_cases();
  ASSERT_EQ(cases.size(), 540u);
  // Value index per dimension of case i: type, keys, head dim, heads, rows.
  constexpr std::array<int, 5> kSizes{3, 4, 5, 3, 3}, kStrides{1, 3, 12, 60, 180};
  std::set<std::array<int, 4>> seen;  // (variant kind, variant value, dimension, value)
  int paged = 0;
  for (int i = 0; i < 540; ++i) {
    const std::array<int, 3> variant{i % kMasks, i / 7 % 5, i / 35 % 2};
    for (int kind = 0; kind < 3; ++kind)
      for (int dim = 0; dim < 5; ++dim)
        seen.insert(
            {kind, variant[static_cast<std::size_t>(kind)], dim,
             i / kStrides[static_cast<std::size_t>(dim)] % kSizes[static_cast<std::size_t>(dim)]});
    const Problem& c = cases[static_cast<std::size_t>(i)];
    paged += c.k_pos.segments().size() > 1;
  }
  std::size_t expected = 0;
  for (const int variants : {kMasks, 5, 2})
    for (const int size : kSizes) expected += static_cast<std::size_t>(variants * size);
  EXPECT_EQ(seen.size(), expected);
  EXPECT_GT(paged, 120);
}

// ---- rows that see no key; empty blocks ----------------------------------------

TEST(Decode, RowsThatSeeNoKeyGiveZeroAndMinusInfinity) {
  for (const VectorIsa isa : {VectorIsa::native, VectorIsa::generic}) {
    Problem pr = shaped(4, 2, 4, 5000, 64, DType::f16, true);
    // Rows 0 and 1 lie before every key, rows 2 and 3 after some.
    pr.k_pos = Positions::contiguous(100, pr.n_kv);
    pr.q_pos = Positions::contiguous(98, 2).append({3000, 1000, 2});
    pr.variant.isa = isa;
    const Inputs in(pr);
    const KernelOut got = run_decode(in.laid);
    const RefOut ref = run_reference(in.dense);
    expect_matches_reference(in.dense, got, ref, kF32Tol);
    for (std::int64_t h = 0; h < pr.heads_q; ++h)
      for (std::int64_t i = 0; i < pr.n_q; ++i) {
        const std::size_t row = static_cast<std::size_t>(h * pr.n_q + i);
        if (i < 2) {
          EXPECT_EQ(got.lse[row], -kInf) << "head " << h << " row " << i;
          for (std::int64_t d = 0; d < pr.head_dim; ++d)
            EXPECT_EQ(got.o[row * 64 + static_cast<std::size_t>(d)], 0.0f);
        } else {
          EXPECT_TRUE(std::isfinite(got.lse[row])) << "head " << h << " row " << i;
        }
      }
  }
}

TEST(Decode, EmptyBlocks) {
  Problem pr = shaped(2, 1, 3, 0, 16);
  {
    const Inputs in(pr);
    const KernelOut got = run_decode(in.laid);
    for (float x : got.o) EXPECT_EQ(x, 0.0f);
    for (float x : got.lse) EXPECT_EQ(x, -kInf);
  }
  pr.n_q = 0;
  pr.n_kv = 100;
  const Inputs in(pr);
  EXPECT_NO_THROW(run_decode(in.laid));
}

// ---- long, low-entropy blocks --------------------------------------------------

// 2^20 keys whose rows are one of `symbols` distinct rows (uneven weights:
// symbol s drawn with weight s + 1), as a genome tokenised one base a token
// gives: fp32 rounding of the long sums then is systematic and does not
// cancel. heads 2 over one kv head, n_q = 2: four rows per group.
struct LowEntropyBlock {
  static constexpr std::int64_t kKeys = std::int64_t{1} << 20, kD = 64, kNq = 2, kHq = 2;
  std::vector<std::byte> q, k, v;
  AttnParams p;

  LowEntropyBlock(int symbols, DType t, bool causal) {
    const std::size_t es = dtype_size(t);
    const auto row = static_cast<std::size_t>(kD) * es;
    std::vector<std::byte> sym_k(static_cast<std::size_t>(symbols) * row), sym_v(sym_k.size());
    fill_seeded(sym_k.data(), t, static_cast<std::size_t>(symbols * kD), 11, 0, 2.0f);
    fill_seeded(sym_v.data(), t, static_cast<std::size_t>(symbols * kD), 12, 0, 1.0f);
    q.resize(static_cast<std::size_t>(kHq * kNq) * row);
    fill_seeded(q.data(), t, static_cast<std::size_t>(kHq * kNq * kD), 13, 0, 2.0f);
    k.resize(static_cast<std::size_t>(kKeys) * row);
    v.resize(k.size());
    const auto weights = static_cast<std::uint64_t>(symbols * (symbols + 1) / 2);
    for (std::int64_t j = 0; j < kKeys; ++j) {
      std::uint64_t x = splitmix64(static_cast<std::uint64_t>(j) ^ 0x5eedu) % weights;
      std::size_t s = 0;
      while (x >= s + 1) x -= ++s;
      std::memcpy(k.data() + static_cast<std::size_t>(j) * row, sym_k.data() + s * row, row);
      std::memcpy(v.data() + static_cast<std::size_t>(j) * row, sym_v.data() + s * row, row);
    }
    p = AttnParams::dense(q.data(), k.data(), v.data(), t, 1, kHq, 1, kNq, kKeys, kD);
    p.causal = causal;
    // Causal: one query at the end (sees all), one three quarters in.
    if (causal) p.q_pos = Positions::contiguous(kKeys * 3 / 4, 1).append({kKeys - 1, 1, 1});
    p.threads = 2;
  }
};

TEST(DecodeLowEntropy, LongBlocksStayWithinFp32Tolerance) {
  for (const int symbols : {2, 5})
    for (const bool causal : {false, true}) {
      const DType t = causal ? DType::f16 : DType::f32;
      const LowEntropyBlock blk(symbols, t, causal);
      const RefOut ref = run_reference(blk.p);
      const KernelOut got = run_decode(blk.p);
      const Errors e = expect_matches_reference(blk.p, got, ref, kF32Tol);
      std::printf("[  errors  ] o %.2e  lse %.2e  (%d symbols, %s, %s)\n", e.o, e.lse, symbols,
                  causal ? "causal" : "full", dtype_name(t));
      AttnParams one = blk.p;
      one.threads = 1;
      EXPECT_TRUE(same_bits(got, run_decode(one))) << "1 and 2 threads differ";
    }
}

TEST(DecodeLowEntropy, PortablePathStaysWithinFp32Tolerance) {
  const LowEntropyBlock blk(2, DType::f16, false);
  AttnParams p = blk.p;
  p.cpu.isa = VectorIsa::generic;
  const RefOut ref = run_reference(p);
  const Errors e = expect_matches_reference(p, run_decode(p), ref, kF32Tol);
  std::printf("[  errors  ] o %.2e  lse %.2e  (portable)\n", e.o, e.lse);
}

// ---- against attention_forward ---------------------------------------------------

TEST(Decode, AgreesWithAttentionForward) {
  int n = 0;
  for (const DType t : {DType::f32, DType::f16, DType::bf16})
    for (const Mask m : {Mask::none, Mask::causal_inside, Mask::window_inside})
      for (const bool paged : {false, true}) {
        Problem pr = shaped(8, 2, 5, 9000, 96, t);
        pr.layout = kLayouts[static_cast<std::size_t>(n++ % 5)];
        apply_mask(pr, m, paged);
        const Inputs in(pr);
        const KernelOut fwd = run_kernel(in.laid);
        const KernelOut dec = run_decode(in.laid);
        const Comparison c = compare_to_reference(
            dec.o.data(), std::vector<double>(fwd.o.begin(), fwd.o.end()).data(),
            static_cast<std::int64_t>(fwd.o.size()));
        EXPECT_LE(c.rel_err, kF32Tol.o)
            << dtype_name(t) << " " << mask_name(m) << (paged ? " paged" : "") << ": worst o["
            << c.worst << "] decode " << c.worst_value << ", forward " << c.worst_ref;
        for (std::size_t i = 0; i < fwd.lse.size(); ++i) {
          if (fwd.lse[i] == -kInf) {
            EXPECT_EQ(dec.lse[i], -kInf);
            continue;
          }
          EXPECT_NEAR(dec.lse[i], fwd.lse[i], 1e-5 * std::max(1.0f, std::fabs(fwd.lse[i])));
        }
      }
}

// compute = bf16 is the main kernel's own rounding: decode hands it over.
TEST(Decode, Bf16ComputeRunsTheMainKernel) {
  Problem pr = shaped(4, 2, 2, 3000, 64, DType::bf16);
  pr.compute = ComputeType::bf16;
  const Inputs in(pr);
  EXPECT_FALSE(decode_suits(in.laid));
  EXPECT_TRUE(same_bits(run_decode(in.laid), run_kernel(in.laid)));
  EXPECT_EQ(last_decode_workspace_bytes(), decode_workspace_bytes(in.laid));
}

// ---- many chunks; groups larger than suited ---------------------------------------

// Chunk counts that are not powers of two (the merge tree's odd ends), and a
// group of 200 rows, which decode_attention still computes right.
TEST(Decode, ManyChunksAndLargeGroups) {
  for (const std::int64_t nkv : {std::int64_t{5 * 2048 + 17}, std::int64_t{7 * 2048}})
    for (const std::int64_t nq : {std::int64_t{1}, std::int64_t{100}}) {
      Problem pr = shaped(2, 1, nq, nkv, 24, DType::f16, true);
      pr.q_pos = Positions::strided(nkv / 3, std::max<std::int64_t>(1, nkv / (2 * nq)), nq);
      Inputs in(pr);
      const RefOut ref = run_reference(in.dense);
      const KernelOut two = run_decode(in.laid);
      expect_matches_reference(in.dense, two, ref, kF32Tol);
      in.laid.threads = 1;
      EXPECT_TRUE(same_bits(two, run_decode(in.laid))) << "kv " << nkv << " q " << nq;
    }
}

// ---- suits, workspace, progress ------------------------------------------------------

TEST(Decode, SuitsFewRowsPerGroup) {
  AttnParams p;
  p.heads_q = 8;
  p.heads_kv = 2;
  p.n_kv = 1 << 20;
  p.head_dim = 128;
  p.n_q = 1;
  EXPECT_TRUE(decode_suits(p));
  p.n_q = 16;  // 64 rows per group
  EXPECT_TRUE(decode_suits(p));
  p.n_q = 17;
  EXPECT_FALSE(decode_suits(p));
  p.n_q = 4096;
  EXPECT_FALSE(decode_suits(p));
  p.n_q = 1;
  p.compute = ComputeType::bf16;
  EXPECT_FALSE(decode_suits(p));
  p.compute = ComputeType::f32;
  p.heads_q = 64;
  p.heads_kv = 1;  // one group of 64 rows
  EXPECT_TRUE(decode_suits(p));
  p.n_q = 2;
  EXPECT_FALSE(decode_suits(p));
}

TEST(Decode, WorkspaceEstimateIsWhatItAllocates) {
  for (const DType t : {DType::f32, DType::f16})
    for (const std::int64_t d : {std::int64_t{7}, std::int64_t{64}})
      for (const Mask m : {Mask::none, Mask::causal_inside})
        for (const bool paged : {false, true}) {
          Problem pr = shaped(6, 3, 3, 5000, d, t);
          apply_mask(pr, m, paged);
          const Inputs in(pr);
          run_decode(in.laid);
          EXPECT_EQ(last_decode_workspace_bytes(), decode_workspace_bytes(in.laid))
              << dtype_name(t) << " d" << d << " " << mask_name(m) << (paged ? " paged" : "");
        }
  // At 2^20 keys the chunk states stay a small fraction of K and V.
  AttnParams p;
  p.heads_q = 8;
  p.heads_kv = 2;
  p.n_q = 16;
  p.n_kv = 1 << 20;
  p.head_dim = 128;
  p.dtype = DType::f16;
  p.threads = 2;
  const double kv_bytes = 2.0 * 2 * static_cast<double>(p.n_kv) * 128 * 2;
  EXPECT_LT(static_cast<double>(decode_workspace_bytes(p)), 0.02 * kv_bytes);
  p.batch = std::int64_t{1} << 40;  // chunk states no machine holds: reported, not wrapped
  p.n_kv = std::int64_t{1} << 40;
  EXPECT_EQ(decode_workspace_bytes(p), static_cast<std::size_t>(kBytesOverflow));
}

TEST(Decode, CallsProgressFromTheCallingThread) {
  struct Calls {
    int n = 0;
    bool other_thread = false;
    std::thread::id caller = std::this_thread::get_id();
    double last = 0;  // the fraction done, which only grows within [0, 1]
    bool bad_fraction = false;
  } calls;
  Problem pr = shaped(4, 1, 1, 200000, 128, DType::f16);
  Inputs in(pr);
  in.laid.progress = [](void* arg, double done) {
    auto* c = static_cast<Calls*>(arg);
    ++c->n;
    if (std::this_thread::get_id() != c->caller) c->other_thread = true;
    if (!(done >= c->last && done <= 1)) c->bad_fraction = true;
    c->last = done;
  };
  in.laid.progress_arg = &calls;
  run_decode(in.laid);
  EXPECT_GT(calls.n, 10);
  EXPECT_FALSE(calls.other_thread);
  EXPECT_FALSE(calls.bad_fraction);
  EXPECT_GT(calls.last, 0.5);  // the last calls come late in the work
}

}  // namespace
}  // namespace ringattn::test
