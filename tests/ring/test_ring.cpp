// The ring against the float64 reference of the whole sequence: every rank
// rebuilds the full Q, K, V from a seed, keeps its shard, runs the ring, and
// checks its rows. Also: the ring's answer equals the one-rank kernel's
// within 1e-5 of the output's scale (the partition only reorders the sums);
// every rank's hops match its neighbours' (what one sends, the next
// receives); one ring serves chunks of different shapes.
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
  if (c.nq < P || c.nkv < P) GTEST_SKIP() << "N < ranks is rejected by design (tested below)";
  const RingProblem pr(c, 101);

  CpuRing ring(MPI_COMM_WORLD);
  RingOptions opt;
  opt.causal = c.causal;
  opt.window = c.window;
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
  for (PartitionKind pk :
       {PartitionKind::contiguous, PartitionKind::zigzag, PartitionKind::striped})
    for (bool causal : {false, true}) {
      out.push_back({pk, causal, 2, 2, 1001, 1001, 32, DType::f32});  // uneven on 3 and 4 ranks
      out.push_back({pk, causal, 4, 1, 130, 130, 64, DType::f32});    // GQA 4:1
      out.push_back({pk, causal, 2, 2, 5, 5, 16, DType::f32});        // N = 5 on 4 ranks
      out.push_back({pk, causal, 2, 2, 77, 300, 16, DType::f32});     // cross-attention
      out.push_back({pk, causal, 4, 2, 257, 257, 128, DType::bf16});  // bf16 storage
      // Windows: narrower than a shard (most steps see nothing), both sides,
      // wider than the sequence, of 0; f16 and cross-attention.
      out.push_back({pk, causal, 2, 1, 1001, 1001, 32, DType::f32, {40, kUnboundedWindow}});
      out.push_back({pk, causal, 2, 2, 600, 600, 16, DType::f16, {100, 250}});
      out.push_back({pk, causal, 2, 2, 77, 300, 16, DType::f32, {20, 5}});
      out.push_back({pk, causal, 2, 2, 130, 130, 16, DType::f32, {0, 0}});
      out.push_back({pk, causal, 2, 2, 130, 130, 16, DType::f32, {9999, 9999}});
    }
  // Packed sequences, each checked against its own float64 answer: long-tailed
  // lengths, GQA, windows (left only, both sides, 0, wider than a sequence),
  // f16, empty and 1-token sequences, sequences shorter than the ranks, one
  // longer than all others together, cross-attention.
  for (PartitionKind pk : {PartitionKind::zigzag, PartitionKind::striped, PartitionKind::balanced})
    for (bool causal : {false, true}) {
      const Window none{};
      out.push_back({pk, causal, 2, 2, 2000, 2000, 32, DType::f32, none, "longtail:40"});
      out.push_back(
          {pk, causal, 4, 1, 700, 700, 16, DType::f32, {64, kUnboundedWindow}, "longtail:25"});
      out.push_back({pk, causal, 2, 2, 500, 500, 16, DType::f16, {30, 10}, "1,0,3,2,400,1,93"});
      out.push_back({pk, causal, 2, 1, 300, 300, 16, DType::f32, {0, 0}, "100,1,199"});
      out.push_back({pk, causal, 2, 2, 300, 300, 16, DType::f32, {5000, 5000}, "280,3,17"});
      out.push_back({pk, causal, 2, 2, 5, 5, 16, DType::f32, none, "2,1,2"});
      out.push_back({pk, causal, 2, 2, 200, 450, 16, DType::f32, none, "longtail:12"});
      out.push_back({pk, causal, 2, 2, 200, 450, 16, DType::f32, {20, 3}, "longtail:12"});
    }
  // The balanced partition on dense inputs (one document).
  for (bool causal : {false, true}) {
    out.push_back({PartitionKind::balanced, causal, 2, 2, 1001, 1001, 32, DType::f32});
    out.push_back({PartitionKind::balanced, causal, 2, 2, 77, 300, 16, DType::f32, {20, 5}});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Ring, RingVsReference, testing::ValuesIn(ring_cases()),
                         [](const testing::TestParamInfo<RingCase>& i) { return i.param.name(); });

// What each rank reports of its steps, all-gathered: rank r's step s is at
// [(r * P + s) * 3] as (source, bytes sent, bytes received); steps a rank
// did not report read as UINT64_MAX.
std::vector<std::uint64_t> gather_steps(const RingStats& st, int P) {
  std::vector<std::uint64_t> mine(3 * static_cast<std::size_t>(P), UINT64_MAX);
  for (std::size_t s = 0; s < std::min(st.steps.size(), mine.size() / 3); ++s) {
    mine[3 * s] = static_cast<std::uint64_t>(st.steps[s].source);
    mine[3 * s + 1] = st.steps[s].bytes_sent;
    mine[3 * s + 2] = st.steps[s].bytes_received;
  }
  std::vector<std::uint64_t> all(mine.size() * static_cast<std::size_t>(P));
  MPI_Allgather(mine.data(), static_cast<int>(mine.size()), MPI_UINT64_T, all.data(),
                static_cast<int>(mine.size()), MPI_UINT64_T, MPI_COMM_WORLD);
  return all;
}

// A ring hangs or reads garbage when ranks disagree on a hop (DESIGN's
// pitfalls): compared across ranks, every step's send must be the size the
// next rank posted for it, and the block rank r sends at step s must be the
// one rank r+1 folds at step s+1. Uneven shards, so a rank that sized a
// receive by the wrong block would show; causal, so skipped steps must hop too.
TEST(RingStats, EveryRankMakesTheSameHops) {
  const int P = world_size(), r = world_rank(), next = (r + 1) % P;
  const std::int64_t n = 64 * P + 1;  // rank 0 holds one token more than the others
  const RingProblem pr({PartitionKind::contiguous, true, 1, 1, n, n, 8, DType::f32}, 7);
  CpuRing ring(MPI_COMM_WORLD);
  RingOptions opt;
  opt.causal = true;  // contiguous causal: rank r skips the blocks of ranks > r
  const RingAnswer a = run_ring_on(ring, pr, opt, false);
  EXPECT_EQ(a.stats.steps.size(), static_cast<std::size_t>(P));
  const std::vector<std::uint64_t> all = gather_steps(a.stats, P);  // every rank, even on failure
  const auto at = [&](int rank, int s, int field) {
    return all[(static_cast<std::size_t>(rank) * P + s) * 3 + field];
  };

  std::vector<int> folded(P, 0);
  for (int s = 0; s < P; ++s) {
    if (at(r, s, 0) < static_cast<std::uint64_t>(P))
      ++folded[at(r, s, 0)];
    else
      ADD_FAILURE() << "rank " << r << " step " << s << ": no source reported";
    if (s + 1 == P) {
      EXPECT_EQ(at(r, s, 1), 0u) << "rank " << r << ": the last step sends nothing";
      EXPECT_EQ(at(r, s, 2), 0u) << "rank " << r << ": the last step receives nothing";
      continue;
    }
    EXPECT_GT(at(r, s, 1), 0u) << "rank " << r << " step " << s << " sent nothing";
    EXPECT_EQ(at(r, s, 1), at(next, s, 2))
        << "step " << s << ": rank " << r << " sent " << at(r, s, 1) << " bytes, rank " << next
        << " posted a receive of " << at(next, s, 2);
    EXPECT_EQ(at(next, s + 1, 0), at(r, s, 0))
        << "rank " << next << " folds at step " << s + 1 << " the block of rank "
        << at(next, s + 1, 0) << ", but rank " << r << " sent it rank " << at(r, s, 0) << "'s";
  }
  for (int src = 0; src < P; ++src)
    EXPECT_EQ(folded[src], 1) << "rank " << r << " folded rank " << src << "'s block "
                              << folded[src] << " times";
  int skipped = 0;
  for (const RingStepStats& st : a.stats.steps) skipped += st.skipped;
  EXPECT_EQ(skipped, P - 1 - r) << "rank " << r << " should skip the blocks of later ranks";
}

// One CpuRing serves a job's chunks: a larger chunk grows its buffers, a
// smaller one reuses them, and the same chunk gives the same bits each time.
TEST(CpuRingBuffers, ServeChunksOfEveryShape) {
  const RingProblem small({PartitionKind::zigzag, true, 2, 1, 40, 40, 16, DType::f32}, 11);
  const RingProblem large({PartitionKind::zigzag, true, 4, 2, 301, 301, 32, DType::f32}, 12);
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
  const RingProblem pr({PartitionKind::contiguous, false, 1, 1, 16, 16, 8, DType::f32}, 13);
  CpuRing ring(MPI_COMM_WORLD);
  run_ring_on(ring, pr, {});
  try {
    ring.run(pr.layout(), pr.qs.data(), nullptr, {});
    ADD_FAILURE() << "a second run without home_block() was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_class(), ErrorClass::internal) << e.what();
  }
}

}  // namespace
}  // namespace ringattn
