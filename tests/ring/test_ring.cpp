// The ring against the float64 reference of the whole sequence: every rank
// rebuilds the full Q, K, V from a seed, keeps its shard, runs the ring, and
// checks its rows. Also: the ring's answer equals the one-rank kernel's
// within 1e-5 of the output's scale (the partition only reorders the sums),
// and every partition's shards tile the sequence exactly.
#include <gtest/gtest.h>
#include <mpi.h>

#include <vector>

#include "comm/mpi_transport.hpp"
#include "core/seeded_data.hpp"
#include "kernel/attention.hpp"
#include "ring/partition.hpp"
#include "ring/ring_attention.hpp"

#include "../common/mpi_test_util.hpp"
#include "../common/ring_test_util.hpp"

namespace ringattn {
namespace {

using test::expect_matches_float64;
using test::expect_same_o;
using test::RingCase;
using test::RingProblem;
using test::world_rank;
using test::world_size;

class RingVsReference : public testing::TestWithParam<RingCase> {};

TEST_P(RingVsReference, MatchesFloat64AndOneRank) {
  const RingCase c = GetParam();
  const int P = world_size();
  if (c.nq < P || c.nkv < P) GTEST_SKIP() << "N < ranks is rejected by design (tested below)";
  const RingProblem pr(c, 101);

  MpiTransport transport(MPI_COMM_WORLD);
  RingOptions opt;
  opt.causal = c.causal;
  opt.threads = 1;
  std::vector<float> o(pr.ref.size()), lse(pr.ref_lse.size());
  const RingStats stats =
      ring_attention(transport, pr.qp, pr.kp, pr.shards(), o.data(), lse.data(), opt);
  EXPECT_EQ(stats.steps.size(), static_cast<std::size_t>(P));
  expect_matches_float64(pr, o, lse, 1e-5);

  // Against the one-rank kernel on the whole sequence: this rank's rows of it.
  std::vector<float> one(static_cast<std::size_t>(pr.B * c.hq * c.nq * c.d)),
      one_lse(static_cast<std::size_t>(pr.B * c.hq * c.nq));
  attention_forward(pr.whole(), one.data(), one_lse.data());
  expect_same_o(o, pr.mine(one, c.d), 1e-5, "ring vs one rank");
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
    }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Ring, RingVsReference, testing::ValuesIn(ring_cases()),
                         [](const testing::TestParamInfo<RingCase>& i) { return i.param.name(); });

TEST(RingStats, EveryRankMakesTheSameHops) {
  const int P = world_size(), r = world_rank();
  const std::int64_t n = 64 * P + 3, d = 8;
  const Partition part(PartitionKind::contiguous, n, P);
  const std::int64_t nloc = part.local_size(r);
  std::vector<float> q(static_cast<std::size_t>(nloc * d)), k(q.size()), v(q.size()), o(q.size());
  fill_seeded(q.data(), DType::f32, q.size(), 1, static_cast<std::uint64_t>(r) * 1000);
  fill_seeded(k.data(), DType::f32, k.size(), 2, static_cast<std::uint64_t>(r) * 1000);
  fill_seeded(v.data(), DType::f32, v.size(), 3, static_cast<std::uint64_t>(r) * 1000);
  MpiTransport transport(MPI_COMM_WORLD);
  RingOptions opt;
  opt.causal = true;  // contiguous causal: rank r skips the blocks of ranks > r
  const RingShards shards{q.data(), k.data(), v.data(), DType::f32, 1, 1, 1, d};
  const RingStats s = ring_attention(transport, part, part, shards, o.data(), nullptr, opt);
  ASSERT_EQ(s.steps.size(), static_cast<std::size_t>(P));
  int skipped = 0;
  for (int i = 0; i < P; ++i) {
    EXPECT_EQ(s.steps[i].source, (r - i + P) % P);
    skipped += s.steps[i].skipped;
    if (i + 1 < P) {
      EXPECT_EQ(s.steps[i].bytes_sent, ring_block_bytes(part, s.steps[i].source, shards));
    } else {
      EXPECT_EQ(s.steps[i].bytes_sent, 0u) << "the last step sends nothing";
    }
  }
  EXPECT_EQ(skipped, P - 1 - r) << "rank " << r << " should skip the blocks of later ranks";
}

}  // namespace
}  // namespace ringattn
