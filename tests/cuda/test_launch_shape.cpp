// The CUDA kernel's launch arithmetic and peak table, on the CPU: these run on
// every machine, GPU or not. The tile rule tested here is the very code the
// kernel runs (launch_shape.hpp's RA_HD functions), so a wrong skip shows up
// here before it shows up as a wrong answer on a device.
//
//   cuda/launch_shape.hpp  paths, tiles, positions encoding, tile kinds, plan_launch
//   cuda/device_peak.hpp   dense tensor-core peaks
//   kernel/tile_classify.hpp  the CPU kernel's rule, the yardstick
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/positions.hpp"
#include "cuda/device.hpp"
#include "cuda/device_peak.hpp"
#include "cuda/launch_shape.hpp"
#include "kernel/params.hpp"
#include "kernel/tile_classify.hpp"

namespace ringattn::cuda {
namespace {

// The error class of what f throws (fails the test if it throws nothing).
template <class F>
ErrorClass error_class_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.error_class();
  }
  ADD_FAILURE() << "expected an Error";
  return ErrorClass::internal;
}

TEST(KernelPath, FollowsStorageAndCompute) {
  EXPECT_EQ(choose_path(DType::f16, ComputeType::f32), KernelPath::mma_f16);
  EXPECT_EQ(choose_path(DType::bf16, ComputeType::f32), KernelPath::mma_bf16);
  EXPECT_EQ(choose_path(DType::f32, ComputeType::f32), KernelPath::fma_f32);
  for (DType t : {DType::f32, DType::f16, DType::bf16})
    EXPECT_EQ(choose_path(t, ComputeType::bf16), KernelPath::mma_bf16) << dtype_name(t);
  EXPECT_EQ(choose_operands(DType::f32, ComputeType::bf16), Operands::f32_as_bf16);
  EXPECT_EQ(choose_operands(DType::f16, ComputeType::bf16), Operands::f16_as_bf16);
  EXPECT_EQ(choose_operands(DType::bf16, ComputeType::bf16), Operands::bf16);
  EXPECT_EQ(choose_operands(DType::f32, ComputeType::f32), Operands::f32_fma);
}

TEST(TileShape, HeadDimTiles) {
  EXPECT_EQ(head_dim_tile(1), 64);
  EXPECT_EQ(head_dim_tile(40), 64);
  EXPECT_EQ(head_dim_tile(64), 64);
  EXPECT_EQ(head_dim_tile(65), 128);
  EXPECT_EQ(head_dim_tile(96), 128);
  EXPECT_EQ(head_dim_tile(128), 128);
  EXPECT_EQ(head_dim_tile(129), 256);
  EXPECT_EQ(head_dim_tile(256), 256);
}

TEST(TileShape, EveryInstantiationFitsItsInvariants) {
  for (KernelPath path : {KernelPath::mma_f16, KernelPath::mma_bf16, KernelPath::fma_f32})
    for (int d : kHeadDimTiles) {
      const TileShape t = tile_shape(path, d);
      SCOPED_TRACE(std::string(kernel_path_name(path)) + " d=" + std::to_string(d));
      EXPECT_EQ(t.d_tile, d);
      EXPECT_GT(t.warps, 0);
      EXPECT_EQ(t.threads(), 32 * t.warps);
      EXPECT_EQ(t.block_k % 16, 0);
      // Fits the smallest opt-in shared memory of the devices the build targets (sm_86/89: 99 KiB).
      EXPECT_LE(shared_memory_bytes(path, t), 99u * 1024u);
      if (path == KernelPath::fma_f32) {
        EXPECT_EQ(t.block_k, 32);  // one lane per key in the softmax
        EXPECT_EQ(t.threads() % t.block_q, 0);
      } else {
        EXPECT_EQ(t.block_q, 16 * t.warps);  // one m16 slice per warp
      }
    }
  // The mma layout: Q, K, V tiles of 2-byte rows padded by 8 elements, plus key positions.
  EXPECT_EQ(shared_memory_bytes(KernelPath::mma_f16, tile_shape(KernelPath::mma_f16, 128)),
            2u * (64 + 2 * 64) * (128 + 8) + 8u * 64);
}

TEST(Positions, EncodesSegmentsAndDefault) {
  const DevicePositions none = encode_positions(Positions{}, 0);
  EXPECT_EQ(none.n_segments, 0);
  const DevicePositions dflt = encode_positions(Positions{}, 100);
  ASSERT_EQ(dflt.n_segments, 1);
  EXPECT_EQ(position_of(dflt, 0), 0);
  EXPECT_EQ(position_of(dflt, 99), 99);

  Positions zz;
  zz.append({0, 1, 16}).append({112, 1, 16});  // zigzag rank 0 of 4, chunks of 16
  const DevicePositions d = encode_positions(zz, 32);
  ASSERT_EQ(d.n_segments, 2);
  for (std::int64_t i = 0; i < 32; ++i) EXPECT_EQ(position_of(d, i), zz[i]) << i;

  Positions many;
  for (int s = 0; s <= kMaxPositionSegments; ++s) many.append({100 * s, 1, 3});
  EXPECT_EQ(error_class_of([&] { encode_positions(many, many.size()); }), ErrorClass::usage);
  EXPECT_EQ(error_class_of([&] { encode_positions(zz, 31); }), ErrorClass::internal);
}

// Positions whose segments are out of order and strided: the range of any
// window must still be its true min and max.
TEST(Positions, RangeOfEveryWindowIsExact) {
  Positions p;
  p.append({500, 3, 7}).append({0, 1, 10}).append({40, 7, 5}).append({200, 1, 1});
  const DevicePositions d = encode_positions(p, p.size());
  for (std::int64_t begin = 0; begin < p.size(); ++begin)
    for (std::int64_t n = 1; begin + n <= p.size(); ++n) {
      std::int64_t lo = std::numeric_limits<std::int64_t>::max(), hi = -lo;
      for (std::int64_t i = begin; i < begin + n; ++i) {
        lo = std::min(lo, p[i]);
        hi = std::max(hi, p[i]);
      }
      const PositionRange r = position_range(d, begin, n);
      ASSERT_EQ(r.min, lo) << "window [" << begin << ", " << begin + n << ")";
      ASSERT_EQ(r.max, hi) << "window [" << begin << ", " << begin + n << ")";
    }
}

AttnParams shape_only(std::int64_t n_q, std::int64_t n_kv, std::int64_t d, DType t, bool causal) {
  AttnParams p = AttnParams::dense(nullptr, nullptr, nullptr, t, 1, 1, 1, n_q, n_kv, d);
  p.causal = causal;
  return p;
}

// The device rule against kernel/tile_classify.hpp on brute-force minima and
// maxima, for the layouts the ring produces.
TEST(TileKind, MatchesTheCpuRuleOnEveryLayout) {
  const std::int64_t P = 4, chunk = 40;  // 4 ranks, 2P chunks of 40 tokens
  std::vector<std::pair<std::string, Positions>> layouts;
  layouts.push_back({"contiguous_r2", Positions::contiguous(2 * 80, 80)});
  for (std::int64_t r = 0; r < P; ++r) {
    Positions zz;
    zz.append({r * chunk, 1, chunk}).append({(2 * P - 1 - r) * chunk, 1, chunk});
    layouts.push_back({"zigzag_r" + std::to_string(r), zz});
    layouts.push_back({"striped_r" + std::to_string(r), Positions::strided(r, P, 80)});
  }
  for (const auto& [qn, qp] : layouts)
    for (const auto& [kn, kp] : layouts)
      for (int bq : {16, 32, 64})
        for (int bk : {32, 64}) {
          const DevicePositions dq = encode_positions(qp, qp.size());
          const DevicePositions dk = encode_positions(kp, kp.size());
          const std::int64_t QT = (qp.size() + bq - 1) / bq, KT = (kp.size() + bk - 1) / bk;
          for (std::int64_t qt = 0; qt < QT; ++qt)
            for (std::int64_t kt = 0; kt < KT; ++kt) {
              std::int64_t qmin = 1 << 30, qmax = -1, kmin = 1 << 30, kmax = -1;
              for (std::int64_t i = qt * bq; i < std::min(qp.size(), (qt + 1) * bq); ++i) {
                qmin = std::min(qmin, qp[i]);
                qmax = std::max(qmax, qp[i]);
              }
              for (std::int64_t j = kt * bk; j < std::min(kp.size(), (kt + 1) * bk); ++j) {
                kmin = std::min(kmin, kp[j]);
                kmax = std::max(kmax, kp[j]);
              }
              const TileKind want = classify_tile(qmin, qmax, kmin, kmax, Visibility::of(true));
              const int got = tile_kind(dq, dk, qp.size(), kp.size(), bq, bk, qt, kt, true);
              const int want_i = want == TileKind::empty      ? kTileEmpty
                                 : want == TileKind::diagonal ? kTileDiagonal
                                                              : kTileFull;
              ASSERT_EQ(got, want_i) << "q " << qn << " k " << kn << " bq " << bq << " bk " << bk
                                     << " tile (" << qt << ", " << kt << ")";
              EXPECT_EQ(tile_kind(dq, dk, qp.size(), kp.size(), bq, bk, qt, kt, false), kTileFull);
            }
        }
}

TEST(TileKind, CountsOfACausalSquare) {
  // n = 1024 with 64 x 64 tiles: 16 diagonal tiles, 120 below (full), 120 above (skipped).
  const AttnParams p = shape_only(1024, 1024, 128, DType::f16, true);
  const TileCounts c = count_tiles(p, tile_shape(KernelPath::mma_f16, 128));
  EXPECT_EQ(c.total, 256);
  EXPECT_EQ(c.diagonal, 16);
  EXPECT_EQ(c.full, 120);
  EXPECT_EQ(c.empty, 120);
  const TileCounts nc = count_tiles(shape_only(1024, 1000, 128, DType::f16, false),
                                    tile_shape(KernelPath::mma_f16, 128));
  EXPECT_EQ(nc.total, 16 * 16);
  EXPECT_EQ(nc.full, nc.total);
  // A key block entirely after the query block: all skipped.
  AttnParams later = shape_only(256, 256, 64, DType::f16, true);
  later.q_pos = Positions::contiguous(0, 256);
  later.k_pos = Positions::contiguous(256, 256);
  const TileCounts lc = count_tiles(later, tile_shape(KernelPath::mma_f16, 64));
  EXPECT_EQ(lc.empty, lc.total);
}

TEST(TileKind, ZigzagGivesEveryRankTheSameWork) {
  // The point of zigzag: every rank's (visible) tile count over the ring is equal.
  const std::int64_t P = 4, chunk = 128;
  const TileShape t = tile_shape(KernelPath::mma_f16, 64);
  auto zz = [&](std::int64_t r) {
    Positions z;
    z.append({r * chunk, 1, chunk}).append({(2 * P - 1 - r) * chunk, 1, chunk});
    return z;
  };
  std::set<std::int64_t> work;
  for (std::int64_t r = 0; r < P; ++r) {
    std::int64_t visible = 0;
    for (std::int64_t src = 0; src < P; ++src) {
      AttnParams p = shape_only(2 * chunk, 2 * chunk, 64, DType::f16, true);
      p.q_pos = zz(r);
      p.k_pos = zz(src);
      const TileCounts c = count_tiles(p, t);
      visible += c.full + c.diagonal;
    }
    work.insert(visible);
  }
  EXPECT_EQ(work.size(), 1u) << "ranks do unequal causal work under zigzag";
}

TEST(BlockOrder, EveryQueryTileOnceCausalLongestFirst) {
  for (bool causal : {false, true}) {
    const std::int64_t q_tiles = 7, bh = 3;
    std::vector<int> seen(static_cast<std::size_t>(q_tiles * bh), 0);
    for (std::int64_t b = 0; b < q_tiles * bh; ++b)
      ++seen[static_cast<std::size_t>((b / q_tiles) * q_tiles +
                                      block_query_tile(b, q_tiles, causal))];
    for (int s : seen) EXPECT_EQ(s, 1);
    // The first block takes the last query tile under causal masking (the most keys).
    EXPECT_EQ(block_query_tile(0, q_tiles, causal), causal ? q_tiles - 1 : 0);
  }
}

TEST(PlanLaunch, GridTilesAndSharedMemory) {
  AttnParams p = AttnParams::dense(nullptr, nullptr, nullptr, DType::bf16, 2, 8, 2, 1000, 700, 128);
  const LaunchShape s = plan_launch(p, DeviceLimits{9, 0, 227 * 1024});
  EXPECT_EQ(s.path, KernelPath::mma_bf16);
  EXPECT_EQ(s.tile.d_tile, 128);
  EXPECT_EQ(s.q_tiles, (1000 + 63) / 64);
  EXPECT_EQ(s.k_tiles, (700 + 63) / 64);
  EXPECT_EQ(s.blocks, s.q_tiles * 8 * 2);
  EXPECT_EQ(s.smem, shared_memory_bytes(s.path, s.tile));
  EXPECT_EQ(s.name(), "cuda-mma-bf16 d=128 bq=64 bk=64");

  p.n_q = 0;
  EXPECT_EQ(plan_launch(p, DeviceLimits{}).blocks, 0);

  // Refusals: too old a device, too little shared memory.
  EXPECT_EQ(error_class_of([&] {
              plan_launch(p, DeviceLimits{7, 5, 64 * 1024});
            }),
            ErrorClass::usage);
  AttnParams wide = AttnParams::dense(nullptr, nullptr, nullptr, DType::f16, 1, 1, 1, 64, 64, 200);
  EXPECT_EQ(error_class_of([&] {
              plan_launch(wide, DeviceLimits{8, 0, 48 * 1024});
            }),
            ErrorClass::usage);
  EXPECT_NO_THROW(plan_launch(wide, DeviceLimits{8, 6, 99 * 1024}));
}

TEST(PlanLaunch, VectorLoadsOnlyWhenAlignedAndUnconverted) {
  alignas(16) static std::uint16_t buf[64];
  AttnParams p = AttnParams::dense(buf, buf, buf, DType::f16, 1, 2, 1, 4, 4, 64);
  EXPECT_TRUE(vector_loads_ok(p, KernelPath::mma_f16));
  EXPECT_FALSE(vector_loads_ok(p, KernelPath::mma_bf16));  // f16 rounded to bf16: converted
  AttnParams odd_stride = p;
  odd_stride.k.row_stride = 64 + 5;
  EXPECT_FALSE(vector_loads_ok(odd_stride, KernelPath::mma_f16));
  AttnParams odd_ptr = p;
  odd_ptr.v.data = buf + 1;
  EXPECT_FALSE(vector_loads_ok(odd_ptr, KernelPath::mma_f16));
  AttnParams d40 = AttnParams::dense(buf, buf, buf, DType::f16, 1, 1, 1, 4, 4, 40);
  EXPECT_TRUE(vector_loads_ok(d40, KernelPath::mma_f16));
  AttnParams d36 = AttnParams::dense(buf, buf, buf, DType::f16, 1, 1, 1, 4, 4, 36);
  EXPECT_FALSE(vector_loads_ok(d36, KernelPath::mma_f16));
  AttnParams f32 = AttnParams::dense(buf, buf, buf, DType::f32, 1, 1, 1, 4, 4, 64);
  EXPECT_FALSE(vector_loads_ok(f32, KernelPath::fma_f32));
}

TEST(KernelImplementation, NamesTheInstantiation) {
  AttnParams p = AttnParams::dense(nullptr, nullptr, nullptr, DType::f16, 1, 1, 1, 8, 8, 96);
  EXPECT_NE(kernel_implementation(p).find("cuda-mma-f16 d=128"), std::string::npos)
      << kernel_implementation(p);
  p.dtype = DType::f32;
  EXPECT_NE(kernel_implementation(p).find("cuda-fma-f32 d=128"), std::string::npos);
  p.compute = ComputeType::bf16;
  EXPECT_NE(kernel_implementation(p).find("cuda-mma-bf16"), std::string::npos);
}

// A build without the CUDA parts says so wherever it is asked, and counts no
// device (nothing stands in for the device code: see cuda/device.hpp).
TEST(WithoutCuda, TheBuildSaysItHasNone) {
  if (kCudaBuilt) GTEST_SKIP() << "this build has the CUDA parts (" << cuda_summary() << ")";
  EXPECT_FALSE(cuda_built());
  EXPECT_EQ(cuda_device_count(), 0);
  EXPECT_NE(cuda_summary().find("not built"), std::string::npos) << cuda_summary();
}

TEST(DevicePeak, DatasheetFigures) {
  struct Case {
    const char* name;
    double tflops;
  };
  for (const Case& c :
       {Case{"NVIDIA A100-SXM4-80GB", 312.0}, Case{"NVIDIA A100 80GB PCIe", 312.0},
        Case{"NVIDIA H100 80GB HBM3", 989.4}, Case{"NVIDIA H100 PCIe", 756.0},
        Case{"NVIDIA H100 NVL", 835.0}, Case{"NVIDIA H200", 989.4}, Case{"NVIDIA L40S", 362.0},
        Case{"NVIDIA L40", 181.0}, Case{"NVIDIA A10", 125.0}, Case{"NVIDIA GH200 480GB", 989.4}}) {
    const DevicePeak p = dense_tensor_peak(c.name, 0, 0, 0, 0);
    EXPECT_TRUE(p.known) << c.name;
    EXPECT_DOUBLE_EQ(p.tflops, c.tflops) << c.name;
    EXPECT_NE(p.source.find("vendor datasheet"), std::string::npos) << p.source;
  }
}

TEST(DevicePeak, EstimateFromRateAndUnknown) {
  // An unlisted sm_90 part at H100 SXM's SM count and clock lands on its figure.
  const DevicePeak e = dense_tensor_peak("Some Future GPU", 9, 0, 132, 1830);
  EXPECT_TRUE(e.known);
  EXPECT_NEAR(e.tflops, 989.4, 989.4 * 0.01);
  EXPECT_NE(e.source.find("estimate"), std::string::npos);
  // And an unlisted sm_80 part at A100's.
  EXPECT_NEAR(dense_tensor_peak("Some A-class GPU", 8, 0, 108, 1410).tflops, 312.0, 3.12);
  const DevicePeak u = dense_tensor_peak("Some Old GPU", 7, 0, 80, 1530);
  EXPECT_FALSE(u.known);
  EXPECT_EQ(u.tflops, 0.0);
  EXPECT_EQ(u.source, "unknown");
}

}  // namespace
}  // namespace ringattn::cuda
