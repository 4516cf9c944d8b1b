// The device ring (ring/device_ring.hpp) against the CPU ring and the float64
// reference, with NCCL and with the MPI-staged transport, at every partition,
// causal and not: every rank rebuilds the whole Q, K, V from a seed, keeps its
// shard, runs both rings and checks its rows (STYLE 10). The two transports
// must agree bit for bit (same kernel, same blocks, same order), and the
// stats must list the CPU ring's hops and skips.
//
// Without a CUDA device on every rank every case skips (agreed, so no rank
// enters the ring alone) and the run prints "Skipped: no CUDA device: ...",
// which ctest reports as Skipped; NCCL cases also skip when a node has more
// ranks than GPUs (NCCL needs a GPU per rank; the staged MPI transport lets
// two ranks share one GPU). The refusals, which run everywhere, are in
// test_device_ring_refusals.cpp.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "comm/device_select.hpp"
#include "cuda/device.hpp"
#include "ring/cpu_ring.hpp"
#include "ring/device_ring.hpp"
#include "ring/partition.hpp"

#include "../common/mpi_test_util.hpp"
#include "../common/ring_test_util.hpp"

namespace ringattn {
namespace {

using test::expect_matches_float64;
using test::expect_same_o;
using test::on_every_rank;
using test::RingAnswer;
using test::RingCase;
using test::RingProblem;
using test::run_ring_on;
using test::world_size;

// Why this transport cannot run on every rank here, or "" when it can.
// Collective.
std::string why_not(const std::string& transport) {
  if (!on_every_rank(cuda_device_count() > 0)) return "no CUDA device: " + cuda_summary();
  const NodeLocalRank local = node_local_rank(MPI_COMM_WORLD);
  if (transport == "nccl" && !on_every_rank(local.size <= cuda_device_count()))
    return "NCCL needs a GPU per rank: " + std::to_string(local.size) + " ranks on this node, " +
           cuda_summary();
  return "";
}

// Whole-executable MPI tests report one verdict: when every case skipped
// for want of a device, say so in the line ctest's SKIP_REGULAR_EXPRESSION
// looks for (tests/cuda/ring_tests.cmake), so the run reads Skipped, not
// Passed. Collective (every rank tears down the environment).
class SkippedWithoutDevice : public testing::Environment {
 public:
  void TearDown() override {
    const std::string why = why_not("mpi");
    const testing::UnitTest& u = *testing::UnitTest::GetInstance();
    if (!why.empty() && u.successful_test_count() == 0 && u.failed_test_count() == 0 &&
        test::world_rank() == 0) {
      std::printf("Skipped: %s\n", why.c_str());
      std::fflush(stdout);
    }
  }
};
const testing::Environment* const kSkippedWithoutDevice =
    testing::AddGlobalTestEnvironment(new SkippedWithoutDevice);

RingAnswer cpu_ring(const RingProblem& pr, const RingOptions& opt) {
  CpuRing ring(MPI_COMM_WORLD);
  return run_ring_on(ring, pr, opt);
}

// Tolerances against float64, relative to the output's scale. f32 storage:
// the kernel keeps fp32 throughout; 16-bit storage: the GPU kernel may round
// P to the storage type before P·V (tensor cores), the CPU kernel does not.
double tolerance(DType t) {
  return t == DType::f32 ? 1e-4 : 1e-2;
}

// One DeviceRing per transport for the whole suite (NCCL init is costly),
// dropped before MPI_Finalize.
class CudaRing : public testing::TestWithParam<std::tuple<std::string, RingCase>> {
 public:
  static DeviceRing& ring(const std::string& transport) {
    auto& r = rings()[transport];
    if (!r) r = std::make_unique<DeviceRing>(MPI_COMM_WORLD, transport, 120.0);
    return *r;
  }
  static void TearDownTestSuite() { rings().clear(); }

 private:
  static std::map<std::string, std::unique_ptr<DeviceRing>>& rings() {
    static std::map<std::string, std::unique_ptr<DeviceRing>> m;
    return m;
  }
};

TEST_P(CudaRing, MatchesCpuRingAndFloat64) {
  const auto& [transport, c] = GetParam();
  if (const std::string why = why_not(transport); !why.empty()) GTEST_SKIP() << why;
  const int P = world_size();
  const RingProblem pr(c, 201);
  RingOptions opt;
  opt.causal = c.causal;
  const RingAnswer cpu = cpu_ring(pr, opt);
  DeviceRing& ring = CudaRing::ring(transport);
  EXPECT_EQ(ring.transport(), transport);
  const RingAnswer dev = run_ring_on(ring, pr, opt);

  expect_matches_float64(pr, dev.o, dev.lse, tolerance(c.dtype));
  expect_same_o(dev.o, cpu.o, tolerance(c.dtype), "device vs CPU ring");

  // The same hops, sources and skips as the CPU ring.
  ASSERT_EQ(dev.stats.steps.size(), static_cast<std::size_t>(P));
  ASSERT_EQ(cpu.stats.steps.size(), static_cast<std::size_t>(P));
  for (int s = 0; s < P; ++s) {
    EXPECT_EQ(dev.stats.steps[s].source, cpu.stats.steps[s].source) << "step " << s;
    EXPECT_EQ(dev.stats.steps[s].skipped, cpu.stats.steps[s].skipped) << "step " << s;
    EXPECT_EQ(dev.stats.steps[s].bytes_sent, cpu.stats.steps[s].bytes_sent) << "step " << s;
    EXPECT_EQ(dev.stats.steps[s].bytes_received, cpu.stats.steps[s].bytes_received) << "step " << s;
    EXPECT_DOUBLE_EQ(dev.stats.steps[s].flops, cpu.stats.steps[s].flops) << "step " << s;
  }
  EXPECT_EQ(dev.stats.bytes_sent, cpu.stats.bytes_sent);
  EXPECT_GE(dev.stats.total_s, dev.stats.compute_s);
}

std::vector<RingCase> cases() {
  std::vector<RingCase> out;
  for (PartitionKind pk :
       {PartitionKind::contiguous, PartitionKind::zigzag, PartitionKind::striped})
    for (bool causal : {false, true}) {
      out.push_back({pk, causal, 2, 2, 301, 301, 64, DType::f32});   // uneven on 2 ranks
      out.push_back({pk, causal, 4, 1, 130, 130, 128, DType::f32});  // GQA 4:1
      out.push_back({pk, causal, 2, 2, 77, 300, 32, DType::f32});    // cross-attention
      out.push_back({pk, causal, 4, 2, 257, 257, 128, DType::bf16});
      out.push_back({pk, causal, 2, 2, 129, 129, 64, DType::f16});
    }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Transports, CudaRing,
                         testing::Combine(testing::Values(std::string("nccl"), std::string("mpi")),
                                          testing::ValuesIn(cases())),
                         [](const testing::TestParamInfo<std::tuple<std::string, RingCase>>& i) {
                           return std::get<0>(i.param) + "_" + std::get<1>(i.param).name();
                         });

// Both transports move the same bytes into the same kernel calls: the
// answers are identical, bit for bit. Runs twice per ring with different
// shapes (the device buffers grow between chunks) and once without lse.
TEST(CudaRingTransports, NcclAndMpiAgreeBitForBit) {
  for (const char* t : {"nccl", "mpi"})
    if (const std::string why = why_not(t); !why.empty()) GTEST_SKIP() << why;
  DeviceRing nccl(MPI_COMM_WORLD, "nccl", 120.0), mpi(MPI_COMM_WORLD, "mpi", 120.0);
  for (const RingCase& c :
       {RingCase{PartitionKind::zigzag, true, 2, 1, 64, 64, 64, DType::f32},
        RingCase{PartitionKind::zigzag, true, 4, 2, 515, 515, 64, DType::bf16},
        RingCase{PartitionKind::striped, false, 2, 2, 33, 40, 16, DType::f32}}) {
    const RingProblem pr(c, 201);
    RingOptions opt;
    opt.causal = c.causal;
    const RingAnswer a = run_ring_on(nccl, pr, opt), b = run_ring_on(mpi, pr, opt);
    EXPECT_EQ(a.o, b.o) << c.name();
    EXPECT_EQ(a.lse, b.lse) << c.name();
    // Without lse: the same o.
    EXPECT_EQ(run_ring_on(mpi, pr, opt, false).o, b.o) << c.name() << " without lse";
  }
}

// Every rank makes the same hops and reports each step, whatever it skips.
TEST(CudaRingTransports, ReportsEveryStep) {
  if (const std::string why = why_not("mpi"); !why.empty()) GTEST_SKIP() << why;
  const int P = world_size(), r = test::world_rank();
  DeviceRing ring(MPI_COMM_WORLD, "mpi", 120.0);
  const RingProblem pr(
      RingCase{PartitionKind::contiguous, true, 1, 1, 64 * P + 3, 64 * P + 3, 32, DType::f32}, 201);
  std::vector<int> seen;
  RingOptions opt;
  opt.causal = true;  // contiguous causal: rank r skips the blocks of ranks > r
  opt.on_step = [&](int done, int) { seen.push_back(done); };
  const RingAnswer a = run_ring_on(ring, pr, opt);
  ASSERT_EQ(a.stats.steps.size(), static_cast<std::size_t>(P));
  int skipped = 0;
  for (int s = 0; s < P; ++s) {
    EXPECT_EQ(a.stats.steps[s].source, (r - s + P) % P);
    skipped += a.stats.steps[s].skipped;
    EXPECT_EQ(seen.at(static_cast<std::size_t>(s)), s + 1);
  }
  EXPECT_EQ(skipped, P - 1 - r);
  EXPECT_EQ(a.stats.steps.back().bytes_sent, 0u) << "the last step sends nothing";
}

}  // namespace
}  // namespace ringattn
