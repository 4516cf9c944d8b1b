// The backward through the ring against the float64 reference's gradients
// of the whole sequence and against the one-rank kernel: every rank rebuilds
// Q, K, V and dO from seeds, runs the forward ring for o and lse, then the
// backward ring, and checks its rows of dq and its own block's dk and dv.
// Run at 1, 2, 3 and 4 ranks: the answer must not depend on them beyond
// fp32 rounding. Also: every rank's hops match its neighbours'.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernel/attention.hpp"
#include "kernel/backward.hpp"
#include "kernel/reference.hpp"
#include "ring/cpu_ring.hpp"
#include "ring/partition.hpp"

#include "../common/mpi_test_util.hpp"
#include "../common/ring_test_util.hpp"

namespace ringattn {
namespace {

using test::RingCase;
using test::RingProblem;
using test::world_rank;
using test::world_size;

constexpr double kGradTol = 1e-4;  // of each tensor's scale, as the kernel's

// This rank's rows (at the partition's global positions) of a whole
// (B, H, N, D) tensor.
template <typename T>
std::vector<T> rows_of(const std::vector<T>& all, std::int64_t BH, std::int64_t N, std::int64_t D,
                       const Positions& pos) {
  std::vector<T> out(static_cast<std::size_t>(BH * pos.size() * D));
  for (std::int64_t bh = 0; bh < BH; ++bh)
    for (std::int64_t i = 0; i < pos.size(); ++i)
      std::copy_n(all.data() + (bh * N + pos[i]) * D, D, out.data() + (bh * pos.size() + i) * D);
  return out;
}

void expect_close(const char* what, const float* got, const std::vector<double>& ref,
                  double floor) {
  const Comparison c = compare_to_reference(got, ref.data(), std::ssize(ref));
  EXPECT_LE(c.max_abs_err / std::max(c.scale, floor), kGradTol)
      << "rank " << world_rank() << " " << what << ": worst [" << c.worst << "] = " << c.worst_value
      << " vs " << c.worst_ref << " (max|ref| " << c.scale << ", floor " << floor << ")";
}

struct Backward {
  std::vector<float> dq, dk, dv;  // this rank's rows of dq, its own block's dk and dv
  RingStats stats;
};

Backward run_backward_ring(CpuRing& ring, const RingProblem& pr, const std::vector<float>& d_o_mine,
                           const RingOptions& opt) {
  RingLayout layout = pr.layout();
  layout.gradients = true;
  auto home = [&] {
    const KvBlockRef h = ring.home_block(layout);
    std::memcpy(h.k(), pr.ks.data(), pr.ks.size());
    std::memcpy(h.v(), pr.vs.data(), pr.vs.size());
  };
  home();
  std::vector<float> lse(pr.ref_lse.size());
  ring.run(layout, pr.qs.data(), lse.data(), opt);
  const std::vector<float> o(ring.output(), ring.output() + pr.ref.size());
  home();  // the forward left other ranks' blocks in the buffers
  Backward b;
  b.stats = ring.run_backward(layout, pr.qs.data(), {d_o_mine.data(), o.data(), lse.data()}, opt);
  b.dq.assign(ring.grad_q(), ring.grad_q() + o.size());
  const std::size_t kv = pr.ks.size() / dtype_size(pr.c.dtype);
  b.dk.assign(ring.grad_kv(), ring.grad_kv() + kv);
  b.dv.assign(ring.grad_kv() + kv, ring.grad_kv() + 2 * kv);
  return b;
}

class RingBackward : public testing::TestWithParam<RingCase> {};

TEST_P(RingBackward, MatchesFloat64AndOneRank) {
  const RingCase c = GetParam();
  const int P = world_size(), r = world_rank();
  if (c.nq < P || c.nkv < P) GTEST_SKIP() << "N < ranks is rejected by design";
  const RingProblem pr(c, 202);
  const AttnParams whole = pr.whole();
  const std::int64_t BHQ = pr.B * c.hq, BHK = pr.B * c.hkv;
  std::vector<float> d_o(static_cast<std::size_t>(BHQ * c.nq * c.d));
  fill_seeded(d_o.data(), DType::f32, d_o.size(), 77, 0, 1.0f);

  CpuRing ring(MPI_COMM_WORLD);
  RingOptions opt;
  opt.causal = c.causal;
  opt.window = c.window;
  opt.threads = 1;
  const Backward got =
      run_backward_ring(ring, pr, rows_of(d_o, BHQ, c.nq, c.d, pr.qp.positions(r)), opt);
  EXPECT_EQ(got.stats.steps.size(), static_cast<std::size_t>(P));

  std::vector<double> dq(d_o.size()), dk(static_cast<std::size_t>(BHK * c.nkv * c.d)),
      dv(dk.size());
  reference_attention_backward(whole, d_o.data(), dq.data(), dk.data(), dv.data());
  const double floor = gradient_error_floor(whole, d_o.data(), std::ssize(d_o));
  const Positions qrows = pr.qp.positions(r), kvrows = pr.kp.positions(r);
  expect_close("dq", got.dq.data(), rows_of(dq, BHQ, c.nq, c.d, qrows), floor);
  expect_close("dk", got.dk.data(), rows_of(dk, BHK, c.nkv, c.d, kvrows), floor);
  expect_close("dv", got.dv.data(), rows_of(dv, BHK, c.nkv, c.d, kvrows), floor);

  // The one-rank kernel on the whole sequence: the ring only reorders sums.
  std::vector<float> o(d_o.size()), lse(static_cast<std::size_t>(BHQ * c.nq));
  attention_forward(whole, o.data(), lse.data());
  std::vector<float> dq1(d_o.size()), dk1(dk.size()), dv1(dk.size());
  attention_backward(whole, {d_o.data(), o.data(), lse.data()}, dq1.data(), dk1.data(), dv1.data());
  auto as_double = [](const std::vector<float>& x) {
    return std::vector<double>(x.begin(), x.end());
  };
  expect_close("dq vs one rank", got.dq.data(), as_double(rows_of(dq1, BHQ, c.nq, c.d, qrows)),
               floor);
  expect_close("dk vs one rank", got.dk.data(), as_double(rows_of(dk1, BHK, c.nkv, c.d, kvrows)),
               floor);
  expect_close("dv vs one rank", got.dv.data(), as_double(rows_of(dv1, BHK, c.nkv, c.d, kvrows)),
               floor);
}

std::vector<RingCase> backward_cases() {
  std::vector<RingCase> out;
  for (PartitionKind pk :
       {PartitionKind::contiguous, PartitionKind::zigzag, PartitionKind::striped})
    for (bool causal : {false, true}) {
      out.push_back({pk, causal, 2, 2, 301, 301, 32, DType::f32});  // uneven on 3 and 4 ranks
      out.push_back({pk, causal, 8, 1, 130, 130, 64, DType::f32});  // GQA 8:1
      out.push_back({pk, causal, 2, 1, 5, 5, 16, DType::f32});      // N = 5 on 4 ranks
      out.push_back({pk, causal, 2, 2, 77, 211, 24, DType::f32});   // cross-attention
      out.push_back({pk, causal, 2, 2, 97, 97, 128, DType::bf16});  // bf16 storage
      out.push_back({pk, causal, 2, 1, 300, 300, 16, DType::f16, {40, 7}});  // window
    }
  // Packed sequences (documents' coordinates) with the balanced partition.
  out.push_back({PartitionKind::balanced, true, 2, 1, 400, 400, 32, DType::f32, {}, "longtail:9"});
  out.push_back(
      {PartitionKind::zigzag, false, 2, 2, 250, 250, 16, DType::f32, {30, 30}, "60,1,0,189"});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Ring, RingBackward, testing::ValuesIn(backward_cases()),
                         [](const testing::TestParamInfo<RingCase>& i) { return i.param.name(); });

// What one rank sends at a step, the next receives: the gradients travel
// one step behind their block, so a wrong offset or size shows here.
TEST(RingBackwardHops, EveryRankMakesTheSameHops) {
  const int P = world_size(), r = world_rank();
  const RingCase c{PartitionKind::zigzag, true, 2, 1, 203, 203, 16, DType::f32};
  const RingProblem pr(c, 9);
  std::vector<float> d_o(static_cast<std::size_t>(pr.B * c.hq * c.nq * c.d), 0.5f);
  CpuRing ring(MPI_COMM_WORLD);
  RingOptions opt;
  opt.causal = true;
  const Backward b =
      run_backward_ring(ring, pr, rows_of(d_o, pr.B * c.hq, c.nq, c.d, pr.qp.positions(r)), opt);
  std::vector<std::uint64_t> sent, received;
  for (const RingStepStats& s : b.stats.steps) {
    sent.push_back(s.bytes_sent);
    received.push_back(s.bytes_received);
  }
  std::vector<std::uint64_t> prev_sent(sent.size());
  // Rank r receives at every step what rank r - 1 sent.
  MPI_Sendrecv(sent.data(), static_cast<int>(sent.size()), MPI_UINT64_T, (r + 1) % P, 0,
               prev_sent.data(), static_cast<int>(prev_sent.size()), MPI_UINT64_T, (r - 1 + P) % P,
               0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  EXPECT_EQ(received, prev_sent) << "rank " << r;
  if (P > 1) {
    EXPECT_EQ(sent.front(), pr.layout().block(r).bytes()) << "step 0 sends the own K/V only";
    EXPECT_GT(b.stats.bytes_sent, b.stats.steps.back().bytes_sent) << "the gradients' hop home";
  }
}

}  // namespace
}  // namespace ringattn
