// The ring's model (job/plan.hpp): its visible-pair counts against the
// kernel's own flop count on every partition, the load balance it reports
// for known cases, the hop-hiding threshold against its own rows, memory
// and rank-count refusals.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.hpp"
#include "job/plan.hpp"
#include "kernel/attention.hpp"

namespace ringattn {
namespace {

PlanMachine machine() {
  PlanMachine m;
  m.rate_gflops = 100;
  m.bandwidth_gbps = 10;
  m.latency_s = 5e-6;
  m.memory_node_gb = 64;
  m.rate_source = "given";
  return m;
}

PlanProblem problem(std::int64_t n, bool causal) {
  PlanProblem p;
  p.n = n;
  p.d = 16;
  p.heads = 2;
  p.kv_heads = 1;
  p.causal = causal;
  return p;
}

// T1 counts every visible pair once, whatever the partition: the pairs the
// model sums over ranks and steps are the kernel's.
TEST(Plan, VisiblePairsAreTheKernelsOnEveryPartition) {
  for (const bool causal : {false, true})
    for (const PartitionKind kind :
         {PartitionKind::contiguous, PartitionKind::zigzag, PartitionKind::striped})
      for (const std::int64_t n : {37, 64, 1000}) {
        PlanProblem p = problem(n, causal);
        p.partition = kind;
        AttnParams all =
            AttnParams::dense(nullptr, nullptr, nullptr, DType::f32, 1, 2, 1, n, n, 16);
        all.causal = causal;
        const double want = attention_flops(all);
        const Plan plan = make_plan(p, machine(), {1, 2, 3, 4, 5, 7});
        for (const PlanRow& r : plan.rows)
          EXPECT_NEAR(r.t1_s * 100e9, want, 1e-9 * want)
              << partition_name(kind) << " N " << n << " P " << r.ranks << " causal " << causal;
      }
}

TEST(Plan, LoadBalanceOfKnownPartitions) {
  PlanProblem p = problem(4096, true);
  p.partition = PartitionKind::contiguous;
  // Contiguous causal at P = 2: rank 1 has 3/4 of the pairs.
  EXPECT_NEAR(make_plan(p, machine(), {2}).rows[0].load_balance, 1.5, 1e-3);
  p.partition = PartitionKind::zigzag;
  for (const PlanRow& r : make_plan(p, machine(), {2, 4, 8}).rows)
    EXPECT_NEAR(r.load_balance, 1.0, 1e-3) << r.ranks;
}

TEST(Plan, OneRankIsT1AndEfficiencyNeverExceedsOne) {
  const Plan plan = make_plan(problem(8192, true), machine(), {1, 2, 3, 16, 256});
  EXPECT_EQ(plan.rows[0].hop_s, 0.0);
  EXPECT_DOUBLE_EQ(plan.rows[0].predicted_s, plan.rows[0].t1_s);
  EXPECT_DOUBLE_EQ(plan.rows[0].efficiency, 1.0);
  for (const PlanRow& r : plan.rows) {
    EXPECT_LE(r.efficiency, 1.0 + 1e-12) << r.ranks;
    EXPECT_GE(r.predicted_s, r.t1_s / r.ranks * (1 - 1e-12)) << r.ranks;
  }
}

// Well above the threshold the hop hides (nothing exposed); well below it
// does not.
TEST(Plan, HopHidesAboveTheThreshold) {
  for (const bool causal : {false, true}) {
    const PlanProblem p = problem(1 << 16, causal);
    const double n_star = make_plan(p, machine(), {1}).min_tokens_to_hide;
    ASSERT_GT(n_star, 1);
    const int above = static_cast<int>(std::floor((1 << 16) / (4 * n_star)));
    const int below = static_cast<int>(std::ceil((1 << 16) / (n_star / 4)));
    const Plan plan = make_plan(p, machine(), {above, below});
    EXPECT_EQ(plan.rows[0].exposed_s, 0.0) << "causal " << causal << " P " << above;
    EXPECT_GT(plan.rows[1].exposed_s, 0.0) << "causal " << causal << " P " << below;
  }
}

TEST(Plan, MemoryAndTooManyRanks) {
  PlanMachine m = machine();
  m.memory_node_gb = 1e-3;  // 1 MB
  const Plan plan = make_plan(problem(1 << 16, false), m, {1, 1024});
  EXPECT_FALSE(plan.rows[0].fits);
  EXPECT_NE(plan.rows[0].why.find("MiB per rank"), std::string::npos) << plan.rows[0].why;
  EXPECT_GT(plan.rows[0].memory_bytes, plan.rows[1].memory_bytes);
  const Plan few = make_plan(problem(100, false), machine(), {200});
  EXPECT_FALSE(few.rows[0].fits);
  EXPECT_EQ(few.rows[0].why, "fewer tokens than ranks");
}

// Ranks beyond the cores share them: 3 one-thread ranks on 2 cores run at
// 2/3 of the rate.
TEST(Plan, SharedCoresSlowEachRank) {
  PlanMachine m = machine();
  m.ranks_per_node = 3;
  const double alone = make_plan(problem(4096, false), m, {3}).rows[0].predicted_s;
  m.cores_per_node = 2;
  EXPECT_NEAR(make_plan(problem(4096, false), m, {3}).rows[0].predicted_s, alone * 1.5,
              1e-9 * alone);
}

TEST(Plan, RefusesWhatItCannotModel) {
  PlanProblem p = problem(64, false);
  p.heads = 3;
  p.kv_heads = 2;
  EXPECT_THROW(make_plan(p, machine(), {1}), Error);
  p = problem(64, true);
  p.n_kv = 32;
  EXPECT_THROW(make_plan(p, machine(), {1}), Error);
  PlanMachine m = machine();
  m.rate_gflops = 0;
  EXPECT_THROW(make_plan(problem(64, false), m, {1}), Error);
  EXPECT_THROW(make_plan(problem(64, false), machine(), {0}), Error);
}

}  // namespace
}  // namespace ringattn
