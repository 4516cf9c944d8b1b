// The bad-input checks the job makes on data and sizes, tested directly
// under mpirun at 1, 2 and 3 ranks:
//   - check_finite_shard: every rank throws the same Error(input) naming the
//     first NaN/Inf of the whole dataset in row-major order, whichever rank
//     holds it and however the tokens are partitioned; f32, f16, bf16;
//   - estimate_rank_bytes: the sum job.cpp, the ring and the kernel allocate,
//     by hand for one shape; overflow is its own error;
//   - preflight: too few tokens, an over-budget estimate and a world size
//     other than SLURM_NTASKS, each one agreed Error.
// Data every rank can rebuild (STYLE 10): element values are a function of
// the global index, so each rank fills its own shard without communication.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/message_text.hpp"
#include "io/nonfinite.hpp"
#include "job/preflight.hpp"
#include "kernel/attention.hpp"
#include "kernel/state.hpp"
#include "ring/partition.hpp"

#include "../common/mpi_test_util.hpp"

namespace ringattn {
namespace {

using test::world_rank;
using test::world_size;

// fn throws on every rank an Error of class cls whose text holds each needle
// and is the same as rank 0's.
void expect_agreed_error(const std::function<void()>& fn, ErrorClass cls,
                         const std::vector<std::string>& needles) {
  test::expect_agreed_error(MPI_COMM_WORLD, fn, cls, needles);
}

// ---- find_first_nonfinite (local) ------------------------------------------------

TEST(FindFirstNonfinite, FiniteDataHasNone) {
  std::vector<float> x(5000, 1.5f);
  x[17] = std::numeric_limits<float>::max();
  x[18] = std::numeric_limits<float>::denorm_min();
  NonfiniteElement e;
  EXPECT_FALSE(find_first_nonfinite(x.data(), DType::f32, {0, 1, 0, 1},
                                    Positions::contiguous(0, 1000), 5, e));
  EXPECT_FALSE(
      find_first_nonfinite(nullptr, DType::f32, {0, 0, 0, 0}, Positions::contiguous(0, 0), 5, e));
}

// Shard (b_count 2, h_count 3, rows 7 strided, D 5) placed at b0 = 1, h0 = 2:
// local flat index -> global [b, h, n, d].
TEST(FindFirstNonfinite, GlobalIndexOfEachType) {
  const BatchHeadRange range{1, 2, 2, 3};
  const Positions rows = Positions::strided(4, 3, 7);  // tokens 4, 7, ..., 22
  const std::int64_t D = 5, n = 2 * 3 * 7 * 5;
  // plane 4 = (b 1, h 1), row 6, d 2 -> [2, 3, 22, 2]; a later one too.
  const std::int64_t at = ((4 * 7) + 6) * D + 2, later = n - 1;

  std::vector<float> f32(n, 0.25f);
  f32[at] = -std::numeric_limits<float>::infinity();
  f32[later] = std::nanf("");
  NonfiniteElement e;
  ASSERT_TRUE(find_first_nonfinite(f32.data(), DType::f32, range, rows, D, e));
  EXPECT_EQ(e.index, (std::array<std::int64_t, 4>{2, 3, 22, 2}));
  EXPECT_EQ(e.kind, NonfiniteElement::neg_inf);

  std::vector<std::uint16_t> f16(n, float_to_f16(0.25f));
  f16[at] = float_to_f16(std::numeric_limits<float>::infinity());
  ASSERT_TRUE(find_first_nonfinite(f16.data(), DType::f16, range, rows, D, e));
  EXPECT_EQ(e.index, (std::array<std::int64_t, 4>{2, 3, 22, 2}));
  EXPECT_EQ(e.kind, NonfiniteElement::pos_inf);
  f16[at] = float_to_f16(65504.0f);  // the largest f16 is finite
  EXPECT_FALSE(find_first_nonfinite(f16.data(), DType::f16, range, rows, D, e));

  std::vector<std::uint16_t> bf16(n, float_to_bf16(0.25f));
  bf16[0] = float_to_bf16(std::nanf(""));
  ASSERT_TRUE(find_first_nonfinite(bf16.data(), DType::bf16, range, rows, D, e));
  EXPECT_EQ(e.index, (std::array<std::int64_t, 4>{1, 2, 4, 0}));
  EXPECT_EQ(e.kind, NonfiniteElement::nan);
}

// Past the scan's block size, in the last partial block.
TEST(FindFirstNonfinite, LateInALongShard) {
  const std::int64_t D = 64, N = 1000;
  std::vector<float> x(static_cast<std::size_t>(N * D), -3.0f);
  x[x.size() - 3] = std::numeric_limits<float>::quiet_NaN();
  NonfiniteElement e;
  ASSERT_TRUE(
      find_first_nonfinite(x.data(), DType::f32, {0, 1, 0, 1}, Positions::contiguous(0, N), D, e));
  EXPECT_EQ(e.index, (std::array<std::int64_t, 4>{0, 0, N - 1, D - 3}));
}

// ---- check_finite_shard (collective) -----------------------------------------------

// A [B, H, N, D] dataset of finite values with non-finite ones at `bad`;
// each rank builds its shard of heads [h0, h0 + hc) under `part`.
struct Dataset {
  std::int64_t B = 2, H = 3, N = 37, D = 6;
  std::vector<std::array<std::int64_t, 4>> bad;
  std::vector<float> shard(const Partition& part, const BatchHeadRange& r) const {
    const Positions rows = part.positions(world_rank());
    std::vector<float> out;
    for (std::int64_t b = r.b0; b < r.b0 + r.b_count; ++b)
      for (std::int64_t h = r.h0; h < r.h0 + r.h_count; ++h)
        for (std::int64_t i = 0; i < rows.size(); ++i)
          for (std::int64_t d = 0; d < D; ++d) {
            float x = 0.01f * static_cast<float>((b * 7 + h * 5 + rows[i] * 3 + d) % 97);
            for (const auto& z : bad)
              if (z == std::array<std::int64_t, 4>{b, h, rows[i], d})
                x = (d % 2) ? std::numeric_limits<float>::infinity() : std::nanf("");
            out.push_back(x);
          }
    return out;
  }
};

class CheckFinite : public testing::TestWithParam<PartitionKind> {};

TEST_P(CheckFinite, FiniteShardsPass) {
  Dataset ds;
  const Partition part(GetParam(), ds.N, world_size());
  const BatchHeadRange r{0, ds.B, 0, ds.H};
  const std::vector<float> x = ds.shard(part, r);
  EXPECT_NO_THROW(check_finite_shard(MPI_COMM_WORLD, x.data(), DType::f32, r,
                                     part.positions(world_rank()), ds.D, "in.h5", "q"));
}

// Bad elements spread over tokens that different ranks own: the first in
// row-major order is named, wherever it lives.
TEST_P(CheckFinite, FirstBadElementOverAllRanks) {
  Dataset ds;
  ds.bad = {{1, 0, 2, 4}, {0, 2, 36, 1}, {0, 2, 30, 3}, {1, 2, 0, 0}};
  const Partition part(GetParam(), ds.N, world_size());
  const BatchHeadRange r{0, ds.B, 0, ds.H};
  const std::vector<float> x = ds.shard(part, r);
  expect_agreed_error(
      [&] {
        check_finite_shard(MPI_COMM_WORLD, x.data(), DType::f32, r, part.positions(world_rank()),
                           ds.D, "in.h5", "keys");
      },
      ErrorClass::input,
      {"input file 'in.h5', dataset 'keys'", "has +Inf at [0, 2, 30, 3]", "--allow-nonfinite"});
}

// The job's shape: one (batch, head block) at a time, the same range on
// every rank; the NaN outside this block is not seen.
TEST_P(CheckFinite, OneBlockAtATime) {
  Dataset ds;
  ds.bad = {{0, 0, 5, 0}, {1, 1, ds.N - 1, 2}};
  const Partition part(GetParam(), ds.N, world_size());
  const BatchHeadRange later{1, 1, 1, 2};
  const std::vector<float> x = ds.shard(part, later);
  expect_agreed_error(
      [&] {
        check_finite_shard(MPI_COMM_WORLD, x.data(), DType::f32, later,
                           part.positions(world_rank()), ds.D, "in.h5", "q");
      },
      ErrorClass::input, {"has NaN at [1, 1, 36, 2]"});
}

INSTANTIATE_TEST_SUITE_P(Partitions, CheckFinite,
                         testing::Values(PartitionKind::contiguous, PartitionKind::zigzag,
                                         PartitionKind::striped),
                         [](const auto& p) { return std::string(partition_name(p.param)); });

// Only the last rank holds a bad element, in f16; the others have nothing
// bad (and rank 0 an empty range: a rank may take part with no data).
TEST(CheckFiniteShard, OnlyTheLastRankHasIt) {
  const int P = world_size(), rank = world_rank();
  const Partition part(PartitionKind::contiguous, 4 * P, P);
  const std::int64_t D = 3, rows = part.local_size(rank);
  const bool empty = rank == 0 && P > 1;
  std::vector<std::uint16_t> x(static_cast<std::size_t>(rows * D), float_to_f16(1.0f));
  if (rank == P - 1) x[static_cast<std::size_t>((rows - 1) * D + 1)] = 0x7e00;  // f16 NaN
  const BatchHeadRange r = empty ? BatchHeadRange{0, 0, 0, 0} : BatchHeadRange{0, 1, 0, 1};
  expect_agreed_error(
      [&] {
        check_finite_shard(MPI_COMM_WORLD, empty ? nullptr : x.data(), DType::f16, r,
                           part.positions(rank), D, "x.h5", "v");
      },
      ErrorClass::input, {"dataset 'v'", "NaN at [0, 0, " + std::to_string(4 * P - 1) + ", 1]"});
}

// ---- the memory estimate -------------------------------------------------------------

InputInfo info_of(std::int64_t B, std::int64_t Hq, std::int64_t Hkv, std::int64_t Nq,
                  std::int64_t Nkv, std::int64_t D, DType t = DType::f32) {
  InputInfo i;
  i.shape.batch = B;
  i.shape.heads_q = Hq;
  i.shape.heads_kv = Hkv;
  i.shape.tokens_q = Nq;
  i.shape.tokens_kv = Nkv;
  i.shape.head_dim = D;
  i.dtype = t;
  i.q.name = "q";
  i.q.dims = {B, Hq, Nq, D};
  i.k.name = "k";
  i.k.dims = {B, Hkv, Nkv, D};
  i.v = i.k;
  i.v.name = "v";
  i.file.path = "in.h5";
  return i;
}

// The estimates for a dense input on `ranks` ranks, over the job's partitions.
RankMemory memory_on(const JobConfig& cfg, const InputInfo& info, int ranks) {
  return estimate_rank_memory(cfg, info, job_partitions(cfg, info, {}, ranks));
}
std::int64_t bytes_on(const JobConfig& cfg, const InputInfo& info, int ranks) {
  return estimate_rank_bytes(cfg, info, job_partitions(cfg, info, {}, ranks));
}

// The estimate is the sum of what the owners allocate for the largest
// chunk: 4 ranks, contiguous, Hq 8 / Hkv 2 (group 4), kv_heads_per_chunk 1,
// Nq 1000 (largest shard 250), Nkv 600 (150), D 64, f32. The kernel and
// the ring are asked with the chunk's real shapes and then made to
// allocate for them: a change of their tiles, packing or buffers moves
// both sides, and a preflight that used another shape would not match.
TEST(EstimateRankBytes, IsWhatTheOwnersAllocate) {
  JobConfig cfg;
  cfg.input = "in.h5";
  cfg.threads = 2;
  const InputInfo info = info_of(3, 8, 2, 1000, 600, 64);
  const std::int64_t hq = 4, nq = 250, nkv = 150, D = 64;
  const RankMemory m = memory_on(cfg, info, 4);
  ASSERT_FALSE(m.overflow);
  EXPECT_EQ(m.q, hq * nq * D * 4);
  EXPECT_EQ(m.state, 2 * hq * nq * 4 + hq * nq * D * 4);
  EXPECT_EQ(m.lse, hq * nq * 4);
  EXPECT_EQ(m.total, m.q + m.ring + m.packed + m.state + m.lse);
  EXPECT_EQ(bytes_on(cfg, info, 4), m.total);

  // The kernel's tiles: what update_state really allocates on the chunk.
  std::vector<float> q(static_cast<std::size_t>(hq * nq * D), 0.5f);
  std::vector<float> k(static_cast<std::size_t>(nkv * D), 0.25f), v = k;
  AttnParams p = AttnParams::dense(q.data(), k.data(), v.data(), DType::f32, 1, hq, 1, nq, nkv, D);
  p.threads = cfg.threads;
  AttnState state(1, hq, nq, D);
  update_state(p, state);
  EXPECT_EQ(static_cast<std::size_t>(m.packed), last_update_state_workspace_bytes());
  // The ring's blocks: two of the largest K/V shard, K then V.
  EXPECT_EQ(m.ring, 2 * 2 * nkv * D * 4);
}

TEST(EstimateRankBytes, GrowsWithChunkShrinksWithRanks) {
  JobConfig cfg;
  const InputInfo info = info_of(1, 16, 4, 100000, 100000, 128, DType::f16);
  const std::int64_t one = bytes_on(cfg, info, 8);
  EXPECT_GT(bytes_on(cfg, info, 4), one);
  EXPECT_LT(bytes_on(cfg, info, 16), one);
  cfg.kv_heads_per_chunk = 4;
  EXPECT_GT(bytes_on(cfg, info, 8), 3 * one);
  cfg.kv_heads_per_chunk = 100;  // clamped to Hkv
  EXPECT_EQ(bytes_on(cfg, info, 8), [&] {
    JobConfig c4;
    c4.kv_heads_per_chunk = 4;
    return bytes_on(c4, info, 8);
  }());
  // f16 storage with an f16 o adds the rounding scratch.
  cfg.kv_heads_per_chunk = 1;
  cfg.o_dtype = OutDType::input;
  const RankMemory m = memory_on(cfg, info, 8);
  EXPECT_EQ(m.out16, 4 * (100000 / 8) * 128 * 2);
  EXPECT_EQ(m.total, one + m.out16);
}

TEST(EstimateRankBytes, OverflowIsItsOwnError) {
  JobConfig cfg;
  cfg.input = "big.h5";
  const InputInfo info = info_of(1, 1, 1, std::int64_t{1} << 61, std::int64_t{1} << 61, 256);
  EXPECT_TRUE(memory_on(cfg, info, 2).overflow);
  try {
    (void)bytes_on(cfg, info, 2);
    ADD_FAILURE() << "no Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_class(), ErrorClass::input);
    EXPECT_NE(std::string(e.what()).find("overflows a 64-bit byte count"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("big.h5"), std::string::npos) << e.what();
  }
}

TEST(RankMemoryBudget, LimitOrNodeShare) {
  EXPECT_EQ(rank_memory_budget(MPI_COMM_WORLD, 3.0), 3 * 1024 * 1024);
  const std::int64_t share = rank_memory_budget(MPI_COMM_WORLD, 0);
  EXPECT_GT(share, 0);
}

// ---- preflight -------------------------------------------------------------------------

class Preflight : public testing::Test {
 protected:
  void SetUp() override {
    cfg_.input = "in.h5";
    unsetenv("SLURM_JOB_ID");
    unsetenv("SLURM_NTASKS");
  }
  void TearDown() override {
    unsetenv("SLURM_JOB_ID");
    unsetenv("SLURM_NTASKS");
  }
  JobConfig cfg_;
};

TEST_F(Preflight, AGoodRunPasses) {
  EXPECT_NO_THROW(preflight(MPI_COMM_WORLD, cfg_, info_of(2, 4, 2, 300, 200, 64)));
}

// What preflight estimated for is what the run gets: the job's partitions
// over the world's ranks (a packed input's auto: balanced).
TEST_F(Preflight, ReturnsThePartitionsItEstimatedFor) {
  const InputInfo info = info_of(1, 2, 2, 300, 300, 16);
  const Documents docs = Documents::packed({0, 10, 250, 300}, {0, 10, 250, 300});
  cfg_.causal = true;
  const RingPartitions dense = preflight(MPI_COMM_WORLD, cfg_, info);
  EXPECT_EQ(dense.kind, PartitionKind::zigzag);
  EXPECT_EQ(dense.q, job_partitions(cfg_, info, {}, world_size()).q);
  const RingPartitions packed = preflight(MPI_COMM_WORLD, cfg_, info, docs);
  EXPECT_EQ(packed.kind, PartitionKind::balanced);
  EXPECT_EQ(packed.q, job_partitions(cfg_, info, docs, world_size()).q);
  EXPECT_EQ(packed.kv, job_partitions(cfg_, info, docs, world_size()).kv);
}

TEST_F(Preflight, FewerTokensThanRanks) {
  const int P = world_size();
  if (P < 2) GTEST_SKIP() << "needs 2 ranks";
  expect_agreed_error([&] { preflight(MPI_COMM_WORLD, cfg_, info_of(1, 2, 2, P - 1, 50, 16)); },
                      ErrorClass::input,
                      {"dataset 'q'", "has " + counted(P - 1, "token") + ", fewer than the " +
                                          std::to_string(P) + " ranks"});
  expect_agreed_error([&] { preflight(MPI_COMM_WORLD, cfg_, info_of(1, 2, 2, 50, P - 1, 16)); },
                      ErrorClass::input, {"dataset 'k'", "fewer than the"});
}

TEST_F(Preflight, HeadDimAboveTheKernel) {
  expect_agreed_error([&] { preflight(MPI_COMM_WORLD, cfg_, info_of(1, 1, 1, 64, 64, 512)); },
                      ErrorClass::input, {"head dim D = 512", "1..256"});
}

TEST_F(Preflight, OverTheMemoryBudget) {
  cfg_.memory_limit_mb = 64;
  cfg_.kv_heads_per_chunk = 4;
  const InputInfo info = info_of(1, 8, 4, 1 << 20, 1 << 20, 128);
  expect_agreed_error([&] { preflight(MPI_COMM_WORLD, cfg_, info); }, ErrorClass::input,
                      {"in.h5", "per rank", "budget of 64.0 MiB", "memory_limit_mb = 64",
                       "kv_heads_per_chunk to 1", "more ranks"});
  cfg_.memory_limit_mb = 1e9;  // plenty
  EXPECT_NO_THROW(preflight(MPI_COMM_WORLD, cfg_, info));
}

TEST_F(Preflight, OverflowingSizes) {
  const InputInfo info = info_of(1, 1, 1, std::int64_t{1} << 61, std::int64_t{1} << 61, 256);
  expect_agreed_error([&] { preflight(MPI_COMM_WORLD, cfg_, info); }, ErrorClass::input,
                      {"overflows a 64-bit byte count"});
}

TEST_F(Preflight, WorldSizeOtherThanSlurmTasks) {
  const int P = world_size();
  const InputInfo info = info_of(1, 1, 1, 64, 64, 16);
  setenv("SLURM_JOB_ID", "4242", 1);
  setenv("SLURM_NTASKS", std::to_string(P + 1).c_str(), 1);
  const std::string n = std::to_string(P + 1);
  expect_agreed_error([&] { preflight(MPI_COMM_WORLD, cfg_, info); }, ErrorClass::usage,
                      {"world size " + std::to_string(P) + " differs from SLURM_NTASKS=" + n,
                       "srun", "mpirun -np " + n});
  expect_agreed_error([&] { check_slurm_world(MPI_COMM_WORLD); }, ErrorClass::usage,
                      {"SLURM_NTASKS=" + n});
  setenv("SLURM_NTASKS", std::to_string(P).c_str(), 1);
  EXPECT_NO_THROW(preflight(MPI_COMM_WORLD, cfg_, info));
  // Outside a job (no SLURM_JOB_ID) a stray SLURM_NTASKS is not checked.
  unsetenv("SLURM_JOB_ID");
  setenv("SLURM_NTASKS", n.c_str(), 1);
  EXPECT_NO_THROW(check_slurm_world(MPI_COMM_WORLD));
}

}  // namespace
}  // namespace ringattn
