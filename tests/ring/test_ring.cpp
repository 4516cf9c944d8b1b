// The ring against the float64 reference of the whole sequence: every rank
// rebuilds the full Q, K, V from a seed, keeps its shard, runs the ring, and
// checks its rows. Also: the ring's answer equals the one-rank kernel's
// within 1e-5 of the output's scale (the partition only reorders the sums),
// and every partition's shards tile the sequence exactly.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "comm/mpi_transport.hpp"
#include "core/seeded_data.hpp"
#include "kernel/attention.hpp"
#include "kernel/reference.hpp"
#include "ring/partition.hpp"
#include "ring/ring_attention.hpp"

#include "../common/mpi_test_util.hpp"

namespace ringattn {
namespace {

using test::world_rank;
using test::world_size;

// Rows of a dense (B, H, N, D) tensor at the given global positions, in that
// order: (B, H, positions.size(), D).
std::vector<char> gather_rows(const std::vector<char>& full, DType t, std::int64_t B,
                              std::int64_t H, std::int64_t N, std::int64_t D,
                              const Positions& pos) {
  const std::size_t es = dtype_size(t), row = static_cast<std::size_t>(D) * es;
  const std::int64_t n = pos.size();
  std::vector<char> out(static_cast<std::size_t>(B * H * n) * row);
  for (std::int64_t bh = 0; bh < B * H; ++bh)
    for (std::int64_t i = 0; i < n; ++i)
      std::memcpy(out.data() + static_cast<std::size_t>(bh * n + i) * row,
                  full.data() + static_cast<std::size_t>(bh * N + pos[i]) * row, row);
  return out;
}

struct RingCase {
  PartitionKind partition;
  bool causal;
  std::int64_t hq, hkv, nq, nkv, d;
  DType dtype;
  std::string name() const {
    return std::string(partition_name(partition)) + (causal ? "_causal" : "_full") + "_h" +
           std::to_string(hq) + "x" + std::to_string(hkv) + "_n" + std::to_string(nq) + "x" +
           std::to_string(nkv) + "_d" + std::to_string(d) + "_" + dtype_name(dtype);
  }
};

class RingVsReference : public testing::TestWithParam<RingCase> {};

TEST_P(RingVsReference, MatchesFloat64AndOneRank) {
  const RingCase c = GetParam();
  const int P = world_size(), r = world_rank();
  const std::int64_t B = 2;
  if (c.nq < P || c.nkv < P) GTEST_SKIP() << "N < ranks is rejected by design (tested below)";
  const std::size_t es = dtype_size(c.dtype);
  std::vector<char> q(static_cast<std::size_t>(B * c.hq * c.nq * c.d) * es),
      k(static_cast<std::size_t>(B * c.hkv * c.nkv * c.d) * es), v(k.size());
  fill_seeded(q.data(), c.dtype, q.size() / es, 101, 0, 2.0f);
  fill_seeded(k.data(), c.dtype, k.size() / es, 102, 0, 2.0f);
  fill_seeded(v.data(), c.dtype, v.size() / es, 103);

  const Partition qp(c.partition, c.nq, P), kp(c.partition, c.nkv, P);
  const std::vector<char> qs = gather_rows(q, c.dtype, B, c.hq, c.nq, c.d, qp.positions(r));
  const std::vector<char> ks = gather_rows(k, c.dtype, B, c.hkv, c.nkv, c.d, kp.positions(r));
  const std::vector<char> vs = gather_rows(v, c.dtype, B, c.hkv, c.nkv, c.d, kp.positions(r));

  MpiTransport transport(MPI_COMM_WORLD);
  RingShards shards{qs.data(), ks.data(), vs.data(), c.dtype, B, c.hq, c.hkv, c.d};
  RingOptions opt;
  opt.causal = c.causal;
  opt.threads = 1;
  const std::int64_t nloc = qp.local_size(r);
  std::vector<float> o(static_cast<std::size_t>(B * c.hq * nloc * c.d)),
      lse(static_cast<std::size_t>(B * c.hq * nloc));
  const RingStats stats = ring_attention(transport, qp, kp, shards, o.data(), lse.data(), opt);
  EXPECT_EQ(stats.steps.size(), static_cast<std::size_t>(P));

  // Whole-sequence answers, then this rank's rows of them.
  AttnParams p =
      AttnParams::dense(q.data(), k.data(), v.data(), c.dtype, B, c.hq, c.hkv, c.nq, c.nkv, c.d);
  p.causal = c.causal;
  std::vector<double> ref(static_cast<std::size_t>(B * c.hq * c.nq * c.d)),
      ref_lse(static_cast<std::size_t>(B * c.hq * c.nq));
  reference_attention(p, ref.data(), ref_lse.data());
  std::vector<float> one(ref.size()), one_lse(ref_lse.size());
  attention_forward(p, one.data(), one_lse.data());

  const Positions pos = qp.positions(r);
  std::vector<double> ref_mine(o.size()), ref_lse_mine(lse.size());
  std::vector<float> one_mine(o.size()), one_lse_mine(lse.size());
  for (std::int64_t bh = 0; bh < B * c.hq; ++bh)
    for (std::int64_t i = 0; i < nloc; ++i) {
      const std::int64_t g = bh * c.nq + pos[i], l = bh * nloc + i;
      ref_lse_mine[l] = ref_lse[g];
      one_lse_mine[l] = one_lse[g];
      for (std::int64_t d = 0; d < c.d; ++d) {
        ref_mine[l * c.d + d] = ref[g * c.d + d];
        one_mine[l * c.d + d] = one[g * c.d + d];
      }
    }
  const Comparison co = compare_to_reference(o.data(), ref_mine.data(), std::ssize(o));
  EXPECT_LE(co.rel_err, 1e-5) << "rank " << r << " worst o[" << co.worst << "] = " << co.worst_value
                              << ", float64 " << co.worst_ref;
  const Comparison cl = compare_to_reference(lse.data(), ref_lse_mine.data(), std::ssize(lse));
  EXPECT_LE(cl.max_abs_err, 1e-5 * std::max(1.0, cl.scale))
      << "rank " << r << " worst lse[" << cl.worst << "] = " << cl.worst_value << ", float64 "
      << cl.worst_ref;

  // Against the one-rank kernel (as f64 for the comparison helper).
  std::vector<double> one_d(one_mine.begin(), one_mine.end());
  const Comparison c1 = compare_to_reference(o.data(), one_d.data(), std::ssize(o));
  EXPECT_LE(c1.rel_err, 1e-5) << "rank " << r << " ring vs one rank, worst o[" << c1.worst
                              << "] = " << c1.worst_value << " vs " << c1.worst_ref;
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
