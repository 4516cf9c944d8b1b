// The device ring (cuda/ring_cuda.hpp) against the CPU ring and the float64
// reference, with NCCL and with the MPI-staged transport, at every partition,
// causal and not: every rank rebuilds the whole Q, K, V from a seed, keeps its
// shard, runs both rings and checks its rows (STYLE 10). The two transports
// must agree bit for bit (same kernel, same blocks, same order), and the
// stats must list the CPU ring's hops and skips.
//
// The refusals (unknown transport, no device, no CUDA build) run everywhere.
// Without a CUDA device on every rank the device cases skip (agreed, so no
// rank enters the ring alone); NCCL cases also skip when a node has more
// ranks than GPUs (NCCL needs a GPU per rank; the staged MPI transport lets
// two ranks share one GPU).
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "comm/mpi_transport.hpp"
#include "core/error.hpp"
#include "core/seeded_data.hpp"
#include "cuda/device.hpp"
#include "cuda/device_select.hpp"
#include "cuda/ring_cuda.hpp"
#include "kernel/reference.hpp"
#include "ring/partition.hpp"
#include "ring/ring_attention.hpp"

#include "../common/mpi_test_util.hpp"

namespace ringattn {
namespace {

using test::on_every_rank;
using test::same_on_every_rank;
using test::world_rank;
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

struct Case {
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

// One problem, this rank's shards, and the answers to compare with.
struct Problem {
  Case c;
  std::int64_t B = 2, nloc = 0;
  Partition qp, kp;
  std::vector<char> qs, ks, vs;
  std::vector<double> ref, ref_lse;  // this rank's rows of the float64 answer
  RingShards shards() const {
    return {qs.data(), ks.data(), vs.data(), c.dtype, B, c.hq, c.hkv, c.d};
  }

  explicit Problem(const Case& cs)
      : c(cs), qp(cs.partition, cs.nq, world_size()), kp(cs.partition, cs.nkv, world_size()) {
    const int r = world_rank();
    const std::size_t es = dtype_size(c.dtype);
    std::vector<char> q(static_cast<std::size_t>(B * c.hq * c.nq * c.d) * es),
        k(static_cast<std::size_t>(B * c.hkv * c.nkv * c.d) * es), v(k.size());
    fill_seeded(q.data(), c.dtype, q.size() / es, 201, 0, 2.0f);
    fill_seeded(k.data(), c.dtype, k.size() / es, 202, 0, 2.0f);
    fill_seeded(v.data(), c.dtype, v.size() / es, 203);
    qs = gather_rows(q, c.dtype, B, c.hq, c.nq, c.d, qp.positions(r));
    ks = gather_rows(k, c.dtype, B, c.hkv, c.nkv, c.d, kp.positions(r));
    vs = gather_rows(v, c.dtype, B, c.hkv, c.nkv, c.d, kp.positions(r));
    nloc = qp.local_size(r);

    AttnParams p =
        AttnParams::dense(q.data(), k.data(), v.data(), c.dtype, B, c.hq, c.hkv, c.nq, c.nkv, c.d);
    p.causal = c.causal;
    std::vector<double> full(static_cast<std::size_t>(B * c.hq * c.nq * c.d)),
        full_lse(static_cast<std::size_t>(B * c.hq * c.nq));
    reference_attention(p, full.data(), full_lse.data());
    const Positions pos = qp.positions(r);
    ref.resize(static_cast<std::size_t>(B * c.hq * nloc * c.d));
    ref_lse.resize(static_cast<std::size_t>(B * c.hq * nloc));
    for (std::int64_t bh = 0; bh < B * c.hq; ++bh)
      for (std::int64_t i = 0; i < nloc; ++i) {
        const std::int64_t g = bh * c.nq + pos[i], l = bh * nloc + i;
        ref_lse[l] = full_lse[g];
        for (std::int64_t d = 0; d < c.d; ++d) ref[l * c.d + d] = full[g * c.d + d];
      }
  }
};

struct Answer {
  std::vector<float> o, lse;
  RingStats stats;
};

Answer cpu_ring(const Problem& pr, const RingOptions& opt) {
  Answer a;
  a.o.resize(pr.ref.size());
  a.lse.resize(pr.ref_lse.size());
  MpiTransport transport(MPI_COMM_WORLD);
  a.stats = ring_attention(transport, pr.qp, pr.kp, pr.shards(), a.o.data(), a.lse.data(), opt);
  return a;
}

Answer device_ring(cuda::DeviceRing& ring, const Problem& pr, const RingOptions& opt) {
  Answer a;
  a.o.assign(pr.ref.size(), -7.0f);  // every element must be written
  a.lse.assign(pr.ref_lse.size(), -7.0f);
  a.stats = ring.run(pr.qp, pr.kp, pr.shards(), a.o.data(), a.lse.data(), opt);
  return a;
}

// Tolerances against float64, relative to the output's scale. f32 storage:
// the kernel keeps fp32 throughout; 16-bit storage: the GPU kernel may round
// P to the storage type before P·V (tensor cores), the CPU kernel does not.
double tolerance(DType t) {
  return t == DType::f32 ? 1e-4 : 1e-2;
}

// One DeviceRing per transport for the whole suite (NCCL init is costly),
// dropped before MPI_Finalize.
class CudaRing : public testing::TestWithParam<std::tuple<std::string, Case>> {
 public:
  static cuda::DeviceRing& ring(const std::string& transport) {
    auto& r = rings()[transport];
    if (!r) r = std::make_unique<cuda::DeviceRing>(MPI_COMM_WORLD, transport, 120.0);
    return *r;
  }
  static void TearDownTestSuite() { rings().clear(); }

 private:
  static std::map<std::string, std::unique_ptr<cuda::DeviceRing>>& rings() {
    static std::map<std::string, std::unique_ptr<cuda::DeviceRing>> m;
    return m;
  }
};

TEST_P(CudaRing, MatchesCpuRingAndFloat64) {
  const auto& [transport, c] = GetParam();
  if (const std::string why = why_not(transport); !why.empty()) GTEST_SKIP() << why;
  const int P = world_size(), r = world_rank();
  const Problem pr(c);
  RingOptions opt;
  opt.causal = c.causal;
  const Answer cpu = cpu_ring(pr, opt);
  cuda::DeviceRing& ring = CudaRing::ring(transport);
  EXPECT_EQ(ring.transport(), transport);
  const Answer dev = device_ring(ring, pr, opt);

  const Comparison co = compare_to_reference(dev.o.data(), pr.ref.data(), std::ssize(dev.o));
  EXPECT_LE(co.rel_err, tolerance(c.dtype))
      << "rank " << r << " worst o[" << co.worst << "] = " << co.worst_value << ", float64 "
      << co.worst_ref;
  const Comparison cl =
      compare_to_reference(dev.lse.data(), pr.ref_lse.data(), std::ssize(dev.lse));
  EXPECT_LE(cl.max_abs_err, tolerance(c.dtype) * std::max(1.0, cl.scale))
      << "rank " << r << " worst lse[" << cl.worst << "] = " << cl.worst_value << ", float64 "
      << cl.worst_ref;
  const std::vector<double> cpu_o(cpu.o.begin(), cpu.o.end());
  const Comparison cc = compare_to_reference(dev.o.data(), cpu_o.data(), std::ssize(dev.o));
  EXPECT_LE(cc.rel_err, tolerance(c.dtype))
      << "rank " << r << " device vs CPU ring, worst o[" << cc.worst << "] = " << cc.worst_value
      << " vs " << cc.worst_ref;

  // The same hops, sources and skips as the CPU ring.
  ASSERT_EQ(dev.stats.steps.size(), static_cast<std::size_t>(P));
  ASSERT_EQ(cpu.stats.steps.size(), static_cast<std::size_t>(P));
  for (int s = 0; s < P; ++s) {
    EXPECT_EQ(dev.stats.steps[s].source, cpu.stats.steps[s].source) << "step " << s;
    EXPECT_EQ(dev.stats.steps[s].skipped, cpu.stats.steps[s].skipped) << "step " << s;
    EXPECT_EQ(dev.stats.steps[s].bytes_sent, cpu.stats.steps[s].bytes_sent) << "step " << s;
    EXPECT_DOUBLE_EQ(dev.stats.steps[s].flops, cpu.stats.steps[s].flops) << "step " << s;
  }
  EXPECT_EQ(dev.stats.bytes_sent, cpu.stats.bytes_sent);
  EXPECT_GE(dev.stats.total_s, dev.stats.compute_s);
}

std::vector<Case> cases() {
  std::vector<Case> out;
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
                         [](const testing::TestParamInfo<std::tuple<std::string, Case>>& i) {
                           return std::get<0>(i.param) + "_" + std::get<1>(i.param).name();
                         });

// Both transports move the same bytes into the same kernel calls: the
// answers are identical, bit for bit. Runs twice per ring with different
// shapes (the device buffers grow between chunks) and once without lse.
TEST(CudaRingTransports, NcclAndMpiAgreeBitForBit) {
  for (const char* t : {"nccl", "mpi"})
    if (const std::string why = why_not(t); !why.empty()) GTEST_SKIP() << why;
  cuda::DeviceRing nccl(MPI_COMM_WORLD, "nccl", 120.0), mpi(MPI_COMM_WORLD, "mpi", 120.0);
  EXPECT_EQ(nccl.size(), world_size());
  EXPECT_EQ(mpi.rank(), world_rank());
  for (const Case& c : {Case{PartitionKind::zigzag, true, 2, 1, 64, 64, 64, DType::f32},
                        Case{PartitionKind::zigzag, true, 4, 2, 515, 515, 64, DType::bf16},
                        Case{PartitionKind::striped, false, 2, 2, 33, 40, 16, DType::f32}}) {
    const Problem pr(c);
    RingOptions opt;
    opt.causal = c.causal;
    const Answer a = device_ring(nccl, pr, opt), b = device_ring(mpi, pr, opt);
    EXPECT_EQ(a.o, b.o) << c.name();
    EXPECT_EQ(a.lse, b.lse) << c.name();
    // Without lse: the same o.
    std::vector<float> o(pr.ref.size());
    mpi.run(pr.qp, pr.kp, pr.shards(), o.data(), nullptr, opt);
    EXPECT_EQ(o, b.o) << c.name() << " without lse";
  }
}

// Every rank makes the same hops and reports each step, whatever it skips.
TEST(CudaRingTransports, ReportsEveryStep) {
  if (const std::string why = why_not("mpi"); !why.empty()) GTEST_SKIP() << why;
  const int P = world_size(), r = world_rank();
  cuda::DeviceRing ring(MPI_COMM_WORLD, "mpi", 120.0);
  const Problem pr(
      Case{PartitionKind::contiguous, true, 1, 1, 64 * P + 3, 64 * P + 3, 32, DType::f32});
  struct Seen {
    std::vector<int> done;
  } seen;
  RingOptions opt;
  opt.causal = true;  // contiguous causal: rank r skips the blocks of ranks > r
  opt.on_step_arg = &seen;
  opt.on_step = [](void* arg, int done, int) { static_cast<Seen*>(arg)->done.push_back(done); };
  const Answer a = device_ring(ring, pr, opt);
  ASSERT_EQ(a.stats.steps.size(), static_cast<std::size_t>(P));
  int skipped = 0;
  for (int s = 0; s < P; ++s) {
    EXPECT_EQ(a.stats.steps[s].source, (r - s + P) % P);
    skipped += a.stats.steps[s].skipped;
    EXPECT_EQ(seen.done.at(static_cast<std::size_t>(s)), s + 1);
  }
  EXPECT_EQ(skipped, P - 1 - r);
  EXPECT_EQ(a.stats.steps.back().bytes_sent, 0u) << "the last step sends nothing";
}

// Refusals, on any machine: the same usage error on every rank.
TEST(DeviceRingRefuses, AnUnknownTransport) {
  try {
    cuda::DeviceRing ring(MPI_COMM_WORLD, "tcp", 0);
    ADD_FAILURE() << "DeviceRing accepted transport tcp";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_class(), ErrorClass::usage) << e.what();
  }
}

TEST(DeviceRingRefuses, AHostWithoutDevice) {
  if (on_every_rank(cuda_device_count() > 0))
    GTEST_SKIP() << "every rank has a CUDA device: nothing to refuse";
  for (const char* transport : {"nccl", "mpi"}) {
    std::string what;
    try {
      cuda::DeviceRing ring(MPI_COMM_WORLD, transport, 10);
      ADD_FAILURE() << "DeviceRing(" << transport << ") without a device";
    } catch (const Error& e) {
      EXPECT_EQ(e.error_class(), ErrorClass::usage) << e.what();
      what = e.what();
    }
    if (!cuda_built()) {
      EXPECT_NE(what.find("built without CUDA"), std::string::npos) << what;
    }
    EXPECT_TRUE(same_on_every_rank(what)) << "ranks disagree: " << what;
  }
}

}  // namespace
}  // namespace ringattn
