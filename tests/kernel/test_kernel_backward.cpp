// The CPU backward kernel against the float64 reference's gradients: odd
// shapes (one row, primes, non-multiples of the tiles), head dims 1..256,
// GQA 1/2/8, cross-attention, causal, windows, storage types and layouts,
// every vector path this CPU runs; a block folded in pieces; rows that see
// no key.
//
//   attn_test_util.hpp   Problem, Inputs (seeded, any layout)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/seeded_data.hpp"
#include "kernel/attn_test_util.hpp"
#include "kernel/backward.hpp"

namespace ringattn::test {
namespace {

// The bound: within 1e-4 of the largest |ref| of each tensor.
constexpr double kGradTol = 1e-4;

struct Grads {
  std::vector<float> dq, dk, dv;
};
struct RefGrads {
  std::vector<double> dq, dk, dv;
};

std::vector<float> upstream(const AttnParams& p, std::uint64_t seed) {
  std::vector<float> d_o(static_cast<std::size_t>(p.batch * p.heads_q * p.n_q * p.head_dim));
  fill_seeded(d_o.data(), DType::f32, d_o.size(), seed, 0, 1.0f);
  return d_o;
}

// The forward (the kernel's o and lse, as a job would have them), then the backward.
Grads run_backward(const AttnParams& p, const std::vector<float>& d_o) {
  const std::size_t qn = static_cast<std::size_t>(p.batch * p.heads_q * p.n_q * p.head_dim);
  const std::size_t kn = static_cast<std::size_t>(p.batch * p.heads_kv * p.n_kv * p.head_dim);
  std::vector<float> o(qn), lse(static_cast<std::size_t>(p.batch * p.heads_q * p.n_q));
  attention_forward(p, o.data(), lse.data());
  Grads g{std::vector<float>(qn, -7.0f), std::vector<float>(kn, -7.0f),
          std::vector<float>(kn, -7.0f)};
  attention_backward(p, {d_o.data(), o.data(), lse.data()}, g.dq.data(), g.dk.data(), g.dv.data());
  return g;
}

RefGrads run_reference_backward(const AttnParams& p, const std::vector<float>& d_o) {
  const std::size_t qn = static_cast<std::size_t>(p.batch * p.heads_q * p.n_q * p.head_dim);
  const std::size_t kn = static_cast<std::size_t>(p.batch * p.heads_kv * p.n_kv * p.head_dim);
  RefGrads r{std::vector<double>(qn), std::vector<double>(kn), std::vector<double>(kn)};
  reference_attention_backward(p, d_o.data(), r.dq.data(), r.dk.data(), r.dv.data());
  return r;
}

// The scale errors are measured against: the tensor's max|ref|, or where
// that is smaller, the floor of gradient_error_floor.
double error_floor(const AttnParams& p, const std::vector<float>& d_o) {
  return gradient_error_floor(p, d_o.data(), std::ssize(d_o));
}

void expect_close(const char* what, const std::vector<float>& got, const std::vector<double>& ref,
                  double floor) {
  ASSERT_EQ(got.size(), ref.size());
  if (got.empty()) return;
  const Comparison c =
      compare_to_reference(got.data(), ref.data(), static_cast<std::int64_t>(got.size()));
  const double scale = std::max(c.scale, floor);
  EXPECT_LE(c.max_abs_err / scale, kGradTol)
      << what << ": worst at element " << c.worst << ": " << c.worst_value << " vs " << c.worst_ref
      << " (max|ref| " << c.scale << ", floor " << floor << ")";
}

void check_gradients(const Problem& pr) {
  const Inputs in(pr);
  const std::vector<float> d_o = upstream(in.dense, 97 + pr.seed);
  const Grads g = run_backward(in.laid, d_o);
  const RefGrads r = run_reference_backward(in.dense, d_o);
  const double floor = error_floor(in.dense, d_o);
  expect_close("dq", g.dq, r.dq, floor);
  expect_close("dk", g.dk, r.dk, floor);
  expect_close("dv", g.dv, r.dv, floor);
}

std::vector<Problem> shapes() {
  struct S {
    std::int64_t nq, nk, d, hq, hk;
    bool causal;
  };
  // N = 1, primes, tile multiples and non-multiples, cross-attention both
  // ways, every head dim class, GQA 1/2/8.
  const S list[] = {
      {1, 1, 1, 1, 1, false},      {1, 37, 16, 2, 1, true},     {37, 1, 64, 1, 1, false},
      {37, 37, 3, 2, 2, true},     {64, 64, 64, 8, 1, false},   {65, 64, 128, 2, 1, true},
      {101, 211, 80, 2, 2, false}, {211, 101, 128, 8, 1, true}, {129, 129, 256, 1, 1, true},
      {300, 300, 32, 2, 1, false}, {257, 513, 64, 1, 1, true},  {7, 300, 256, 2, 1, false},
  };
  std::vector<Problem> out;
  int i = 0;
  for (const S& s : list) {
    Problem p = shaped(s.hq, s.hk, s.nq, s.nk, s.d, DType::f32, s.causal);
    p.batch = i % 3 == 2 ? 2 : 1;
    p.seed = static_cast<std::uint64_t>(i + 1);
    std::ostringstream os;
    os << "q" << s.nq << "_kv" << s.nk << "_d" << s.d << "_h" << s.hq << "kv" << s.hk
       << (s.causal ? "_causal" : "_full") << (p.batch > 1 ? "_b2" : "");
    p.name = os.str();
    out.push_back(p);
    ++i;
  }
  return out;
}

class BackwardShapes : public ::testing::TestWithParam<Problem> {};
TEST_P(BackwardShapes, MatchesFloat64Reference) {
  check_gradients(GetParam());
}
INSTANTIATE_TEST_SUITE_P(Kernel, BackwardShapes, ::testing::ValuesIn(shapes()), param_name);

// Storage types and strided layouts: the packs widen and gather correctly.
TEST(Backward, StorageTypesAndLayouts) {
  for (DType t : {DType::f32, DType::f16, DType::bf16})
    for (Layout l : {Layout::dense, Layout::token_major, Layout::packed_kv, Layout::mixed}) {
      Problem p = shaped(4, 2, 77, 93, 24, t, true);
      p.layout = l;
      SCOPED_TRACE(std::string(dtype_name(t)) + " " + layout_name(l));
      check_gradients(p);
    }
}

// Windows, and positions that leave some queries with no key at all:
// those rows' dq is exactly 0, and they add nothing to dk and dv.
TEST(Backward, WindowsAndRowsThatSeeNoKey) {
  Problem p = shaped(2, 1, 150, 90, 40);
  p.window = Window{10, 5};
  // Queries at 0..149, keys at 40..129: queries below 35 and above 139 see none.
  p.k_pos = Positions::contiguous(40, 90);
  check_gradients(p);

  const Inputs in(p);
  const std::vector<float> d_o = upstream(in.dense, 5);
  const Grads g = run_backward(in.laid, d_o);
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t i : {0, 34, 140, 149})
      for (std::int64_t d = 0; d < 40; ++d)
        EXPECT_EQ(g.dq[static_cast<std::size_t>((h * 150 + i) * 40 + d)], 0.0f)
            << "head " << h << " row " << i;
}

// Every vector path this CPU runs gives the reference's gradients.
TEST(Backward, EveryVectorPath) {
  for (VectorIsa isa : {VectorIsa::avx512, VectorIsa::avx2, VectorIsa::generic}) {
    if (!cpu_runs(isa)) {
      std::printf("[ SKIPPED  ] the %s path: this CPU cannot execute it\n", vector_isa_name(isa));
      continue;
    }
    Problem p = shaped(2, 1, 130, 200, 72, DType::f32, true);
    p.variant.isa = isa;
    SCOPED_TRACE(vector_isa_name(isa));
    check_gradients(p);
  }
}

// A block folded in two pieces (as the ring does, one per step) gives the
// whole block's gradients; one thread and two agree.
TEST(Backward, FoldedInPiecesAsTheRingDoes) {
  Problem pr = shaped(4, 2, 200, 180, 64, DType::f32, true);
  const Inputs in(pr);
  const AttnParams& whole = in.dense;
  const std::vector<float> d_o = upstream(whole, 11);
  const RefGrads r = run_reference_backward(whole, d_o);
  std::vector<float> o(d_o.size()), lse(static_cast<std::size_t>(4 * 200));
  attention_forward(whole, o.data(), lse.data());

  for (int threads : {1, 2}) {
    AttnParams p = whole;
    p.threads = threads;
    GradState g;
    g.reset(p, {d_o.data(), o.data(), lse.data()});
    // Keys [0, 100) and [100, 180), each its own dense block with positions.
    std::vector<float> dk(r.dk.size(), 0.0f), dv(r.dv.size(), 0.0f);
    for (auto [lo, n] : {std::pair<std::int64_t, std::int64_t>{100, 80}, {0, 100}}) {
      std::vector<float> kb(static_cast<std::size_t>(2 * n * 64)), vb(kb.size());
      for (std::int64_t h = 0; h < 2; ++h)
        for (std::int64_t j = 0; j < n; ++j)
          for (std::int64_t d = 0; d < 64; ++d) {
            const std::size_t src = static_cast<std::size_t>((h * 180 + lo + j) * 64 + d);
            const std::size_t dst = static_cast<std::size_t>((h * n + j) * 64 + d);
            kb[dst] = element_f32(in.k.data(), DType::f32, src);
            vb[dst] = element_f32(in.v.data(), DType::f32, src);
          }
      AttnParams block =
          AttnParams::dense(in.q.data(), kb.data(), vb.data(), DType::f32, 1, 4, 2, 200, n, 64);
      block.causal = true;
      block.threads = threads;
      block.k_pos = Positions::contiguous(lo, n);
      std::vector<float> dkb(kb.size(), 0.0f), dvb(kb.size(), 0.0f);
      g.fold(block, dkb.data(), dvb.data());
      for (std::int64_t h = 0; h < 2; ++h)
        for (std::int64_t j = 0; j < n; ++j)
          for (std::int64_t d = 0; d < 64; ++d) {
            dk[static_cast<std::size_t>((h * 180 + lo + j) * 64 + d)] =
                dkb[static_cast<std::size_t>((h * n + j) * 64 + d)];
            dv[static_cast<std::size_t>((h * 180 + lo + j) * 64 + d)] =
                dvb[static_cast<std::size_t>((h * n + j) * 64 + d)];
          }
    }
    std::vector<float> dq(d_o.size());
    g.finish(dq.data());
    SCOPED_TRACE("threads " + std::to_string(threads));
    const double floor = error_floor(whole, d_o);
    expect_close("dq", dq, r.dq, floor);
    expect_close("dk", dk, r.dk, floor);
    expect_close("dv", dv, r.dv, floor);
  }
}

TEST(Backward, RefusesBf16Compute) {
  Problem pr;
  pr.n_q = pr.n_kv = 16;
  pr.head_dim = 8;
  pr.compute = ComputeType::bf16;
  const Inputs in(pr);
  const std::vector<float> d_o = upstream(in.dense, 3), o(d_o.size()), lse(16);
  GradState g;
  try {
    g.reset(in.dense, {d_o.data(), o.data(), lse.data()});
    FAIL() << "compute = bf16 was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_class(), ErrorClass::usage);
    EXPECT_NE(std::string(e.what()).find("f32 only"), std::string::npos) << e.what();
  }
}

TEST(Backward, FlopsAreTwoAndAHalfForwards) {
  Problem pr = shaped(1, 1, 100, 70, 16, DType::f32, true);
  const Inputs in(pr);
  EXPECT_DOUBLE_EQ(attention_backward_flops(in.dense), 2.5 * attention_flops(in.dense));
  EXPECT_GT(attention_flops(in.dense), 0);
}

}  // namespace
}  // namespace ringattn::test
