// Partitions: every token owned exactly once, shard sizes within one token
// (or one per chunk), positions and owner() inverse of each other, zigzag's
// chunk rule, the range of a shard's positions (what the ring's causal skip
// reads), and the causal balance zigzag and striped exist for.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "core/error.hpp"
#include "kernel/attention.hpp"
#include "ring/partition.hpp"

namespace ringattn {
namespace {

TEST(Partition, EveryTokenOwnedOnceAndOwnerInvertsPositions) {
  for (PartitionKind k : {PartitionKind::contiguous, PartitionKind::zigzag, PartitionKind::striped})
    for (int P : {1, 2, 3, 4, 7, 8})
      for (std::int64_t n : {std::int64_t{P}, std::int64_t{P + 1}, std::int64_t{2 * P + 1},
                             std::int64_t{1001}, std::int64_t{4096}}) {
        const Partition part(k, n, P);
        std::vector<int> seen(static_cast<std::size_t>(n), 0);
        std::int64_t total = 0, lo = n, hi = 0;
        for (int r = 0; r < P; ++r) {
          const Positions pos = part.positions(r);
          ASSERT_EQ(pos.size(), part.local_size(r));
          ASSERT_GE(part.local_size(r), 1) << partition_name(k) << " n=" << n << " P=" << P;
          lo = std::min(lo, part.local_size(r));
          hi = std::max(hi, part.local_size(r));
          total += pos.size();
          for (std::int64_t i = 0; i < pos.size(); ++i) {
            ASSERT_GE(pos[i], 0);
            ASSERT_LT(pos[i], n);
            ++seen[static_cast<std::size_t>(pos[i])];
            const auto [orank, orow] = part.owner(pos[i]);
            ASSERT_EQ(orank, r);
            ASSERT_EQ(orow, i);
          }
        }
        EXPECT_EQ(total, n);
        EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int s) { return s == 1; }));
        EXPECT_LE(hi - lo, k == PartitionKind::zigzag ? 2 : 1) << partition_name(k);
        EXPECT_EQ(part.max_local_size(), hi);
      }
}

TEST(Partition, PositionRangeIsTheSmallestAndLargestRow) {
  for (PartitionKind k : {PartitionKind::contiguous, PartitionKind::zigzag, PartitionKind::striped})
    for (int P : {1, 2, 3, 7})
      for (std::int64_t n : {std::int64_t{P}, std::int64_t{2 * P + 1}, std::int64_t{1001}}) {
        const Partition part(k, n, P);
        for (int r = 0; r < P; ++r) {
          const Positions pos = part.positions(r);
          std::int64_t lo = pos[0], hi = pos[0];
          for (std::int64_t i = 0; i < pos.size(); ++i) {
            lo = std::min(lo, pos[i]);
            hi = std::max(hi, pos[i]);
          }
          const PositionRange got = pos.range();
          EXPECT_EQ(got.min, lo) << partition_name(k) << " n=" << n << " P=" << P << " r=" << r;
          EXPECT_EQ(got.max, hi) << partition_name(k) << " n=" << n << " P=" << P << " r=" << r;
        }
      }
  const PositionRange none = Positions().range();
  EXPECT_GT(none.min, none.max) << "no rows: a range nothing falls in";
}

TEST(Partition, ZigzagHoldsChunksRAndMirror) {
  const Partition part(PartitionKind::zigzag, 80, 4);  // 8 chunks of 10
  const Positions p1 = part.positions(1);
  ASSERT_EQ(p1.segments().size(), 2u);
  EXPECT_EQ(p1.segments()[0].first, 10);
  EXPECT_EQ(p1.segments()[1].first, 60);
  EXPECT_EQ(p1.size(), 20);
}

TEST(Partition, StripedIsStrided) {
  const Partition part(PartitionKind::striped, 10, 3);
  EXPECT_EQ(part.local_size(0), 4);
  EXPECT_EQ(part.local_size(2), 3);
  EXPECT_EQ(part.positions(1)[2], 7);
}

TEST(Partition, DefaultsAndNames) {
  EXPECT_EQ(default_partition(true), PartitionKind::zigzag);
  EXPECT_EQ(default_partition(false), PartitionKind::contiguous);
  EXPECT_EQ(parse_partition("striped"), PartitionKind::striped);
  EXPECT_THROW(parse_partition("diagonal"), Error);
  EXPECT_THROW(Partition(PartitionKind::contiguous, 2, 3), Error);
}

// Causal work per rank (visible pairs over the whole ring): zigzag and
// striped within 3% of the mean at P = 2, 4, 8; contiguous far from it.
double causal_imbalance(PartitionKind k, std::int64_t n, int P) {
  const Partition part(k, n, P);
  std::vector<double> work(P, 0.0);
  for (int r = 0; r < P; ++r)
    for (int src = 0; src < P; ++src) {
      AttnParams p = AttnParams::dense(nullptr, nullptr, nullptr, DType::f32, 1, 1, 1,
                                       part.local_size(r), part.local_size(src), 1);
      p.causal = true;
      p.q_pos = part.positions(r);
      p.k_pos = part.positions(src);
      work[r] += attention_flops(p);
    }
  double mean = 0;
  for (double w : work) mean += w / P;
  return *std::max_element(work.begin(), work.end()) / mean;
}

TEST(Partition, ZigzagAndStripedBalanceCausalWork) {
  for (int P : {2, 4, 8}) {
    EXPECT_LE(causal_imbalance(PartitionKind::zigzag, 32768, P), 1.03) << "P=" << P;
    EXPECT_LE(causal_imbalance(PartitionKind::striped, 32768, P), 1.03) << "P=" << P;
    EXPECT_GT(causal_imbalance(PartitionKind::contiguous, 32768, P), 1.3) << "P=" << P;
  }
}

}  // namespace
}  // namespace ringattn
