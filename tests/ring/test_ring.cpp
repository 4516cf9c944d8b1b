// The ring against the float64 reference of the whole sequence: every rank
// rebuilds the full Q, K, V from a seed, keeps its shard, runs the ring, and
// checks its rows. Also: the ring's answer equals the one-rank kernel's
// within 1e-5 of the output's scale (the partition only reorders the sums);
// one ring serves chunks of different shapes.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/error.hpp"
#include "kernel/attention.hpp"
#include "ring/cpu_ring.hpp"
#include "ring/partition.hpp"

#include "../common/mpi_test_util.hpp"
#include "../common/ring_test_util.hpp"

namespace ringattn {
namespace {

using test::expect_matches_float64;
using test::expect_same_o;
using test::RingAnswer;
using test::RingCase;
using test::RingProblem;
using test::run_ring_on;
using test::world_rank;
using test::world_size;

class RingVsReference : public testing::TestWithParam<RingCase> {};

TEST_P(RingVsReference, MatchesFloat64AndOneRank) {
  const RingCase c = GetParam();
  const int P = world_size();
  if (c.nq < P || c.nkv < P)
    GTEST_SKIP() << "N < ranks is rejected by design (tested below)";
  const RingProblem pr(c, 101);

  CpuRing ring(MPI_COMM_WORLD);
  RingOptions opt;
  opt.causal = c.causal;
  opt.threads = 1;
  const RingAnswer a = run_ring_on(ring, pr, opt);
  EXPECT_EQ(a.stats.steps.size(), static_cast<std::size_t>(P));
  expect_matches_float64(pr, a.o, a.lse, 1e-5);

  // Against the one-rank kernel on the whole sequence: this rank's rows of it.
  std::vector<float> one(static_cast<std::size_t>(pr.B * c.hq * c.nq * c.d)),
      one_lse(static_cast<std::size_t>(pr.B * c.hq * c.nq));
  attention_forward(pr.whole(), one.data(), one_lse.data());
  expect_same_o(a.o, pr.mine(one, c.d), 1e-5, "ring vs one rank");
}

std::vector<RingCase> ring_cases() {
  std::vector<RingCase> out;
  for (PartitionKind pk : {PartitionKind::contiguous, PartitionKind::zigzag,
                           PartitionKind::striped})
    for (bool causal : {false, true}) {
      out.push_back({pk, causal, 2, 2, 1001, 1001, 32,
                     DType::f32}); // uneven on 3 and 4 ranks
      out.push_back({pk, causal, 4, 1, 130, 130, 64, DType::f32}); // GQA 4:1
      out.push_back(
          {pk, causal, 2, 2, 5, 5, 16, DType::f32}); // N = 5 on 4 ranks
      out.push_back(
          {pk, causal, 2, 2, 77, 300, 16, DType::f32}); // cross-attention
      out.push_back(
          {pk, causal, 4, 2, 257, 257, 128, DType::bf16}); // bf16 storage
    }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Ring, RingVsReference, testing::ValuesIn(ring_cases()),
                         [](const testing::TestParamInfo<RingCase> &i) {
                           return i.param.name();
                         });

TEST(RingStats, EveryRankMakesTheSameHops) {
  const int P = world_size(), r = world_rank();
  const std::int64_t n = 64 * P + 3;
  const RingProblem pr(
      {PartitionKind::contiguous, true, 1, 1, n, n, 8, DType::f32}, 7);
  CpuRing ring(MPI_COMM_WORLD);
  RingOptions opt;
  opt.causal = true; // contiguous causal: rank r skips the blocks of ranks > r
  const RingAnswer a = run_ring_on(ring, pr, opt, false);
  ASSERT_EQ(a.stats.steps.size(), static_cast<std::size_t>(P));
  int skipped = 0;
  for (int i = 0; i < P; ++i) {
    EXPECT_EQ(a.stats.steps[i].source, (r - i + P) % P);
    skipped += a.stats.steps[i].skipped;
    if (i + 1 < P) {
      EXPECT_EQ(a.stats.steps[i].bytes_sent,
                pr.layout().block(a.stats.steps[i].source).bytes());
    } else {
      EXPECT_EQ(a.stats.steps[i].bytes_sent, 0u)
          << "the last step sends nothing";
    }
  }
  EXPECT_EQ(skipped, P - 1 - r)
      << "rank " << r << " should skip the blocks of later ranks";
}

// One CpuRing serves a job's chunks: a larger chunk grows its buffers, a
// smaller one reuses them, and the same chunk gives the same bits each time.
TEST(CpuRingBuffers, ServeChunksOfEveryShape) {
  const RingProblem small(
      {PartitionKind::zigzag, true, 2, 1, 40, 40, 16, DType::f32}, 11);
  const RingProblem large(
      {PartitionKind::zigzag, true, 4, 2, 301, 301, 32, DType::f32}, 12);
  CpuRing ring(MPI_COMM_WORLD);
  RingOptions opt;
  opt.causal = true;
  const RingAnswer first = run_ring_on(ring, small, opt);
  const RingAnswer big = run_ring_on(ring, large, opt);
  const RingAnswer again = run_ring_on(ring, small, opt);
  expect_matches_float64(large, big.o, big.lse, 1e-5);
  EXPECT_EQ(first.o, again.o) << "rank " << world_rank();
  EXPECT_EQ(first.lse, again.lse) << "rank " << world_rank();
}

// A run overwrites the home block with other ranks' blocks, so each needs
// its own home_block(): a second run() without one is refused, on every
// rank alike and before any hop.
TEST(CpuRingBuffers, EachRunNeedsItsHomeBlock) {
  const RingProblem pr(
      {PartitionKind::contiguous, false, 1, 1, 16, 16, 8, DType::f32}, 13);
  CpuRing ring(MPI_COMM_WORLD);
  run_ring_on(ring, pr, {});
  try {
    ring.run(pr.layout(), pr.qs.data(), nullptr, {});
    ADD_FAILURE() << "a second run without home_block() was accepted";
  } catch (const Error &e) {
    EXPECT_EQ(e.error_class(), ErrorClass::internal) << e.what();
  }
}

} // namespace
} // namespace ringattn
