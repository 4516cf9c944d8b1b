// The kernel's parts, each against an independent statement of what it must
// do: f16 and bf16 conversions (exact values, round to nearest even, every
// bit pattern), the vector exp2 and compensated sums, the causal mask of a
// score tile, tile classification, global positions, the flop count, seeded
// data, and the comparison the other tests rely on.
//
//   core/dtype.hpp           f16/bf16 <-> f32
//   core/seeded_data.hpp     fill_seeded, seeded_uniform
//   kernel/softmax_tile.hpp  exp2_array, compensated_add, mask_tile (each
//                            vector path this CPU runs)
//   kernel/tile_classify.hpp classify_tile
//   core/positions.hpp     Positions
//   kernel/attention.hpp     attention_flops
//   kernel/reference.hpp     compare_to_reference
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/positions.hpp"
#include "core/seeded_data.hpp"
#include "kernel/attention.hpp"
#include "kernel/attn_test_util.hpp"
#include "kernel/params.hpp"
#include "kernel/reference.hpp"
#include "kernel/softmax_tile.hpp"
#include "kernel/tile_classify.hpp"
#include "kernel/tile_gemm.hpp"

namespace ringattn {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

float bits_to_float(std::uint32_t u) {
  return std::bit_cast<float>(u);
}

std::string hex(std::uint32_t x) {
  std::ostringstream os;
  os << "0x" << std::hex << std::setw(4) << std::setfill('0') << x;
  return os.str();
}

bool is_f16_nan(std::uint16_t h) {
  return (h & 0x7c00u) == 0x7c00u && (h & 0x03ffu) != 0;
}
bool is_bf16_nan(std::uint16_t h) {
  return (h & 0x7f80u) == 0x7f80u && (h & 0x007fu) != 0;
}

// ---- f16 -----------------------------------------------------------------------

struct F16Case {
  float f;
  std::uint16_t h;
  const char* why;
};

TEST(F16, ExactValuesAndRoundToNearestEven) {
  const float u24 = std::ldexp(1.0f, -24);  // the smallest subnormal half
  const F16Case cases[] = {
      {1.0f, 0x3c00, "one"},
      {-2.0f, 0xc000, "minus two"},
      {-1.5f, 0xbe00, "minus one and a half"},
      {0.1f, 0x2e66, "0.1 rounds down"},
      {0.0f, 0x0000, "zero"},
      {-0.0f, 0x8000, "negative zero keeps its sign"},
      {65504.0f, 0x7bff, "largest finite half"},
      {std::nextafter(65520.0f, 0.0f), 0x7bff, "just below the overflow midpoint"},
      {65520.0f, 0x7c00, "overflow midpoint: ties to even = Inf"},
      {-65520.0f, 0xfc00, "negative overflow"},
      {1e6f, 0x7c00, "far above the range"},
      {std::numeric_limits<float>::max(), 0x7c00, "float max"},
      {kInf, 0x7c00, "Inf"},
      {-kInf, 0xfc00, "-Inf"},
      {std::ldexp(1.0f, -14), 0x0400, "smallest normal half"},
      {1023 * u24, 0x03ff, "largest subnormal half"},
      {1023.5f * u24, 0x0400, "tie between largest subnormal and smallest normal: even"},
      {u24, 0x0001, "smallest subnormal 2^-24"},
      {-u24, 0x8001, "negative smallest subnormal"},
      {0.5f * u24, 0x0000, "2^-25: tie between 0 and 2^-24, even = 0"},
      {std::nextafter(0.5f * u24, 1.0f), 0x0001, "just above 2^-25"},
      {1.5f * u24, 0x0002, "tie between 1 and 2 subnormal units: even = 2"},
      {2.5f * u24, 0x0002, "tie between 2 and 3 units: even = 2"},
      {3.5f * u24, 0x0004, "tie between 3 and 4 units: even = 4"},
      {1e-10f, 0x0000, "below half the smallest subnormal"},
      {std::numeric_limits<float>::denorm_min(), 0x0000, "float subnormal"},
      {1.0f + std::ldexp(1.0f, -11), 0x3c00, "1 + half an ulp: tie, even = 1"},
      {1.0f + 3 * std::ldexp(1.0f, -11), 0x3c02, "1 + 1.5 ulp: tie, even = 1 + 2 ulp"},
      {1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -23), 0x3c01, "just above the tie"},
      {1.0f + std::ldexp(1.0f, -10), 0x3c01, "1 + one ulp"},
      {2049.0f, 0x6800, "2049: tie between 2048 and 2050, even = 2048"},
      {2051.0f, 0x6802, "2051: tie between 2050 and 2052, even = 2052"},
      {std::nextafter(2.0f, 0.0f), 0x4000, "rounding carries into the exponent"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(hex(float_to_f16(c.f)), hex(c.h)) << c.why << " (" << c.f << ")";
  }
  // And back: every non-NaN half in the table widens to the value it names.
  EXPECT_EQ(f16_to_float(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_float(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_float(0x0001), u24);
  EXPECT_EQ(f16_to_float(0x03ff), 1023 * u24);
  EXPECT_EQ(f16_to_float(0x0400), std::ldexp(1.0f, -14));
  EXPECT_EQ(f16_to_float(0x7c00), kInf);
  EXPECT_EQ(f16_to_float(0xfc00), -kInf);
  EXPECT_TRUE(std::signbit(f16_to_float(0x8000)) && f16_to_float(0x8000) == 0.0f);
}

TEST(F16, NanStaysNan) {
  for (std::uint32_t u : {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x7fbfffffu, 0xff800001u}) {
    const std::uint16_t h = float_to_f16(bits_to_float(u));
    EXPECT_TRUE(is_f16_nan(h)) << hex(u) << " -> " << hex(h);
  }
  const std::uint16_t half_nans[] = {0x7e00, 0x7c01, 0x7fff, 0xfe00, 0xfc01};
  for (std::uint16_t h : half_nans) EXPECT_TRUE(std::isnan(f16_to_float(h))) << hex(h);
}

// Every one of the 65536 half bit patterns survives f16 -> f32 -> f16, except
// that a NaN may come back with another payload (but as a NaN).
TEST(F16, EveryBitPatternRoundTrips) {
  int nans = 0;
  for (std::uint32_t i = 0; i <= 0xffff; ++i) {
    const auto h = static_cast<std::uint16_t>(i);
    const float f = f16_to_float(h);
    const std::uint16_t back = float_to_f16(f);
    if (is_f16_nan(h)) {
      ++nans;
      ASSERT_TRUE(std::isnan(f)) << hex(h);
      ASSERT_TRUE(is_f16_nan(back)) << hex(h) << " -> " << hex(back);
    } else {
      ASSERT_EQ(hex(back), hex(h)) << "value " << f;
    }
  }
  EXPECT_EQ(nans, 2 * 1023);
}

// Independent check of the rounding: for floats across the whole half range,
// the result is a nearest half, and on a tie the one with an even significand.
TEST(F16, RoundsEveryFloatToANearestHalf) {
  const double max_finite = 65504.0, overflow = 65520.0;
  // Positive floats from 0 up past the overflow threshold, in a stride
  // coprime to the 13 dropped bits so every rounding position shows up.
  for (std::uint32_t u = 0; u < 0x47800000u; u += 997) {
    const float f = bits_to_float(u);
    const std::uint16_t h = float_to_f16(f);
    ASSERT_EQ(float_to_f16(-f), h | 0x8000u) << "sign symmetry at " << f;
    if (f >= overflow) {
      ASSERT_EQ(h, 0x7c00) << f;
      continue;
    }
    ASSERT_LE(h, 0x7bff) << f;
    const double x = f, v = f16_to_float(h);
    const double below = h > 0 ? f16_to_float(static_cast<std::uint16_t>(h - 1)) : -1.0;
    const double above = h < 0x7bff ? f16_to_float(static_cast<std::uint16_t>(h + 1))
                                    : 2 * max_finite;  // beyond: the Inf side
    ASSERT_LE(std::fabs(x - v), std::fabs(x - below)) << f << " -> " << hex(h);
    ASSERT_LE(std::fabs(x - v), std::fabs(x - above)) << f << " -> " << hex(h);
    if (std::fabs(x - v) == std::fabs(x - below) || std::fabs(x - v) == std::fabs(x - above)) {
      ASSERT_EQ(h & 1, 0) << "tie at " << f << " went to odd " << hex(h);
    }
  }
}

// ---- bf16 ----------------------------------------------------------------------

TEST(Bf16, ExactValuesAndRoundToNearestEven) {
  const struct {
    std::uint32_t f;
    std::uint16_t h;
    const char* why;
  } cases[] = {
      {0x3f800000u, 0x3f80, "one"},
      {0x3f808000u, 0x3f80, "1 + half an ulp: tie, even = 1"},
      {0x3f818000u, 0x3f82, "1 + 1.5 ulp: tie, even = 1 + 2 ulp"},
      {0x3f808001u, 0x3f81, "just above the tie"},
      {0x3f807fffu, 0x3f80, "just below the tie"},
      {0x3fffffffu, 0x4000, "rounding carries into the exponent"},
      {0x7f7fffffu, 0x7f80, "float max rounds up to Inf"},
      {0x7f7f7fffu, 0x7f7f, "largest value that stays finite"},
      {0x7f800000u, 0x7f80, "Inf"},
      {0xff800000u, 0xff80, "-Inf"},
      {0x80000000u, 0x8000, "negative zero"},
      {0x00000001u, 0x0000, "smallest float subnormal rounds to zero"},
      {0x00008000u, 0x0000, "subnormal tie, even = 0"},
      {0x00018000u, 0x0002, "subnormal tie, even = 2"},
      {0xbfc00000u, 0xbfc0, "-1.5 exactly"},
  };
  for (const auto& c : cases) EXPECT_EQ(hex(float_to_bf16(bits_to_float(c.f))), hex(c.h)) << c.why;
  for (std::uint32_t u : {0x7fc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu}) {
    const std::uint16_t h = float_to_bf16(bits_to_float(u));
    EXPECT_TRUE(is_bf16_nan(h)) << hex(u) << " -> " << hex(h) << " (a NaN must not become Inf)";
  }
  EXPECT_EQ(round_to_bf16(bits_to_float(0x3f818000u)), bits_to_float(0x3f820000u));
}

TEST(Bf16, EveryBitPatternRoundTrips) {
  for (std::uint32_t i = 0; i <= 0xffff; ++i) {
    const auto h = static_cast<std::uint16_t>(i);
    const float f = bf16_to_float(h);
    ASSERT_EQ(std::bit_cast<std::uint32_t>(f), i << 16) << "widening is a shift";
    if (is_bf16_nan(h))
      ASSERT_TRUE(is_bf16_nan(float_to_bf16(f))) << hex(h);
    else
      ASSERT_EQ(hex(float_to_bf16(f)), hex(h));
  }
}

TEST(Bf16, RoundsEveryFloatToANearestBf16) {
  for (std::uint32_t u = 0; u < 0x7f7f8000u; u += 65521 * 7) {  // finite results only
    const float f = bits_to_float(u);
    const std::uint16_t h = float_to_bf16(f);
    const double x = f, v = bf16_to_float(h);
    const double below = h > 0 ? bf16_to_float(static_cast<std::uint16_t>(h - 1)) : -1.0;
    const double above = bf16_to_float(static_cast<std::uint16_t>(h + 1));
    ASSERT_LE(std::fabs(x - v), std::fabs(x - below)) << hex(u) << " -> " << hex(h);
    ASSERT_LE(std::fabs(x - v), std::fabs(x - above)) << hex(u) << " -> " << hex(h);
    if (std::fabs(x - v) == std::fabs(x - below) || std::fabs(x - v) == std::fabs(x - above)) {
      ASSERT_EQ(h & 1, 0) << "tie at " << hex(u) << " went to odd " << hex(h);
    }
  }
}

TEST(DType, LoadAndStoreEveryType) {
  const std::vector<float> x{1.0f, -0.5f, 65504.0f, 3.0f, std::ldexp(1.0f, -24)};
  for (DType t : {DType::f32, DType::f16, DType::bf16}) {
    std::vector<std::byte> stored(x.size() * dtype_size(t));
    std::vector<float> back(x.size());
    store_from_f32(x.data(), t, stored.data(), x.size());
    load_f32(stored.data(), t, back.data(), x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      const float expect = t == DType::f32   ? x[i]
                           : t == DType::f16 ? f16_to_float(float_to_f16(x[i]))
                                             : round_to_bf16(x[i]);
      EXPECT_EQ(back[i], expect) << dtype_name(t) << " element " << i;
      EXPECT_EQ(element_f32(stored.data(), t, i), expect) << dtype_name(t) << " element " << i;
    }
    EXPECT_EQ(parse_dtype(dtype_name(t)), t);
  }
  EXPECT_EQ(parse_dtype("float16"), DType::f16);
  EXPECT_EQ(parse_dtype("bfloat16"), DType::bf16);
  EXPECT_THROW(parse_dtype("f64"), Error);
  EXPECT_EQ(parse_compute_type("bf16"), ComputeType::bf16);
  EXPECT_STREQ(compute_type_name(ComputeType::f32), "f32");
  EXPECT_THROW(parse_compute_type("fp8"), Error);
}

// ---- exp2 --------------------------------------------------------------------------

// exp2_array takes a multiple of 16 elements: pad with zeros.
std::vector<float> exp2_of(std::vector<float> x, VectorIsa isa) {
  const std::size_t n = x.size();
  x.resize((n + 15) / 16 * 16, 0.0f);
  std::vector<float> out(x.size());
  exp2_array(x.data(), out.data(), static_cast<int>(x.size()), isa);
  out.resize(n);
  return out;
}

// The worst relative error of exp2_array against std::exp2 in double, over a
// grid of step 1/1024 and 1e5 seeded points covering [-126, 127].
double exp2_worst_relative_error(VectorIsa isa) {
  std::vector<float> x;
  for (int i = -126 * 1024; i <= 127 * 1024; ++i) x.push_back(static_cast<float>(i) / 1024.0f);
  std::vector<float> r(100000);  // uniform over [-126, 127)
  fill_seeded(r.data(), DType::f32, r.size(), 42, 0, 126.5f);
  for (float v : r) x.push_back(v + 0.5f);
  const std::vector<float> y = exp2_of(x, isa);
  double worst = 0;
  std::size_t at = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double ref = std::exp2(static_cast<double>(x[i]));
    const double err = std::fabs(y[i] - ref) / ref;
    if (err > worst) {
      worst = err;
      at = i;
    }
  }
  std::printf("[  exp2    ] %s: worst relative error %.3e at x = %.9g: %.9g vs %.9g\n",
              vector_isa_name(isa), worst, x[at], y[at], std::exp2(static_cast<double>(x[at])));
  return worst;
}

// Each compiled path of the vector code (softmax_tile.cpp), where this CPU
// runs it.
class Exp2 : public ::testing::TestWithParam<VectorIsa> {
 protected:
  void SetUp() override {
    if (!cpu_runs(GetParam()))
      GTEST_SKIP() << "this CPU cannot execute the " << vector_isa_name(GetParam()) << " path";
  }
};

// exp2 reduces x to n + f, |f| <= 1/2, and evaluates a degree-6 polynomial
// interpolating 2^f at Chebyshev nodes: 1.0e-7 worst relative error when
// evaluated in fp32 (the degree-6 Taylor polynomial it replaced reached
// 2.16e-7 at x = 44.50035, f = -0.49965).
TEST_P(Exp2, RelativeErrorBelow2e7OverTheNormalRange) {
  EXPECT_LT(exp2_worst_relative_error(GetParam()), 2e-7);
}

TEST_P(Exp2, IntegersAreExact) {
  std::vector<float> x;
  for (int n = -126; n <= 127; ++n) x.push_back(static_cast<float>(n));
  const std::vector<float> y = exp2_of(x, GetParam());
  for (std::size_t i = 0; i < x.size(); ++i)
    EXPECT_EQ(y[i], std::ldexp(1.0f, static_cast<int>(x[i]))) << "2^" << x[i];
}

TEST_P(Exp2, ExactlyZeroBelowMinus126) {
  const std::vector<float> x{
      std::nextafter(-126.0f, -200.0f),   -126.25f, -126.5f, -127.0f, -149.0f, -1000.0f, -1e30f,
      -std::numeric_limits<float>::max(), -kInf};
  const std::vector<float> y = exp2_of(x, GetParam());
  for (std::size_t i = 0; i < x.size(); ++i) EXPECT_EQ(y[i], 0.0f) << "x = " << x[i];
}

// The AVX-512 exp2 reduces with vreduceps and scales with vscalefps where
// the AVX2 one uses the magic number and builds 2^n from bits: the same
// values bit for bit (the same FMA polynomial, one rounding of p · 2^n), over
// every 1021st bit pattern (all exponents, both signs, inf and NaN), a grid
// of step 2^-12 over [-128, 128] and the edges of the clamps.
TEST(Exp2Paths, Avx512MatchesAvx2BitForBit) {
  if (!cpu_runs(VectorIsa::avx512) || !cpu_runs(VectorIsa::avx2))
    GTEST_SKIP() << "this CPU cannot execute both the avx512 and the avx2 path";
  std::vector<float> x;
  for (std::uint64_t b = 0; b < (std::uint64_t{1} << 32); b += 1021)
    x.push_back(std::bit_cast<float>(static_cast<std::uint32_t>(b)));
  for (int i = -128 * 4096; i <= 128 * 4096; ++i) x.push_back(static_cast<float>(i) / 4096.0f);
  for (float e : {-127.0f, -126.5f, -126.0f, -125.5f, 126.5f, 127.0f, 127.5f, 128.0f, 1e30f})
    for (float v : {std::nextafter(e, -kInf), e, std::nextafter(e, kInf)}) {
      x.push_back(v);
      x.push_back(-v);
    }
  x.insert(x.end(), {0.0f, -0.0f, kInf, -kInf, std::numeric_limits<float>::quiet_NaN()});
  const std::vector<float> a = exp2_of(x, VectorIsa::avx512);
  const std::vector<float> b = exp2_of(x, VectorIsa::avx2);
  std::size_t differ = 0;
  for (std::size_t i = 0; i < x.size(); ++i)
    if (std::bit_cast<std::uint32_t>(a[i]) != std::bit_cast<std::uint32_t>(b[i]) && ++differ <= 5)
      ADD_FAILURE() << "x = " << std::setprecision(9) << x[i] << ": avx512 " << a[i] << ", avx2 "
                    << b[i];
  EXPECT_EQ(differ, 0u) << "of " << x.size();
}

INSTANTIATE_TEST_SUITE_P(Kernel, Exp2,
                         ::testing::Values(VectorIsa::avx512, VectorIsa::avx2, VectorIsa::generic),
                         [](const ::testing::TestParamInfo<VectorIsa>& param) {
                           return std::string(vector_isa_name(param.param));
                         });

// ---- softmax_tile ------------------------------------------------------------------

// One softmax step on copies of the scores, running max and l's lanes, with
// the rows it rescales (P·V partial, total, Kahan terms) seeded from
// rows_seed; bf16_out: probabilities as bf16 bits (the dot path's form).
struct StepOut {
  std::vector<std::uint16_t> p;
  std::vector<float> s, m2, lanes, lcomp, part, acc, comp;
};
StepOut softmax_step(VectorIsa isa, const std::vector<float>& s, const std::vector<float>& m2,
                     const std::vector<float>& lanes, int rows, int bk, int d, bool bf16_out,
                     float scale, std::uint64_t rows_seed,
                     const SoftmaxTile::Prefetch (&prefetch)[2]) {
  StepOut o;
  o.p.assign(s.size(), 0xffff);
  o.s = s;
  o.m2 = m2;
  o.lanes = lanes;
  o.lcomp.assign(o.lanes.size(), 0.0f);
  for (auto* r : {&o.part, &o.acc, &o.comp}) {
    r->resize(static_cast<std::size_t>(rows) * d);
    fill_seeded(r->data(), DType::f32, r->size(), rows_seed);
  }
  softmax_tile({.s = o.s.data(),
                .rows = rows,
                .bk = bk,
                .m2 = o.m2.data(),
                .l_lanes = o.lanes.data(),
                .l_comp = o.lcomp.data(),
                .acc_partial = o.part.data(),
                .acc = o.acc.data(),
                .acc_comp = o.comp.data(),
                .head_dim = d,
                .round_bf16 = bf16_out,
                .p_bf16 = bf16_out ? o.p.data() : nullptr,
                .score_scale = scale,
                .prefetch = {prefetch[0], prefetch[1]}},
               isa);
  return o;
}
constexpr SoftmaxTile::Prefetch kNoPrefetch[2] = {};

// The bf16 dot path's softmax step (probabilities out as bf16 bits): the
// AVX-512 path (vcvtneps2bf16 where the CPU has AVX512_BF16, which flushes
// denormals) gives the AVX2 path's values bit for bit: probabilities, running
// max and the rescaled rows; l's lanes are laid out per vector width, so
// their sums agree to rounding. Exponents span [-140, 0], across the -126
// edge below which exp2 gives 0; 37 rows and 17 vectors a row leave partial
// chunks of rows and of the row max's unrolled loop; one row is all hidden,
// one starts from an empty state.
TEST(SoftmaxTilePaths, Bf16OutAvx512MatchesAvx2BitForBit) {
  if (!cpu_runs(VectorIsa::avx512) || !cpu_runs(VectorIsa::avx2))
    GTEST_SKIP() << "this CPU cannot execute both the avx512 and the avx2 path";
  constexpr int rows = 37, bk = 272, d = 24;
  constexpr float scale = 0.7f;
  std::vector<float> u(static_cast<std::size_t>(rows) * bk), m2(rows);
  fill_seeded(u.data(), DType::f32, u.size(), 91);
  fill_seeded(m2.data(), DType::f32, m2.size(), 92);
  std::vector<float> s(u.size());
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < bk; ++j) {
      const std::size_t e = static_cast<std::size_t>(i) * bk + j;
      // Scores whose scaled values lie within 140 of 3 (the max of most rows).
      s[e] = (3.0f - 70.0f * (std::fabs(u[e]) + std::fabs(u[(e * 7 + 3) % u.size()]))) / scale;
      if (i == 5 || (e % 13 == 0)) s[e] = -kInf;
    }
  for (int i = 0; i < rows; ++i) m2[i] = i == 6 ? -kInf : 4.0f * m2[i];
  std::vector<float> l(rows), lanes(static_cast<std::size_t>(rows) * kLanes);
  for (int i = 0; i < rows; ++i) l[i] = i == 6 ? 0.0f : 1.0f + 0.01f * static_cast<float>(i);
  spread_lanes(l.data(), rows, lanes.data());
  struct Out : StepOut {
    std::vector<float> l;
  };
  auto run = [&](VectorIsa isa) {
    Out o{softmax_step(isa, s, m2, lanes, rows, bk, d, true, scale, 93, kNoPrefetch), {}};
    o.l.resize(rows);
    sum_lanes(o.lanes.data(), rows, o.l.data());
    return o;
  };
  const Out a = run(VectorIsa::avx512), b = run(VectorIsa::avx2);
  std::size_t differ = 0, zeros = 0, tiny = 0;
  for (std::size_t e = 0; e < s.size(); ++e) {
    if (a.p[e] != b.p[e] && ++differ <= 5)
      ADD_FAILURE() << "p[" << e << "]: avx512 " << std::hex << a.p[e] << ", avx2 " << b.p[e]
                    << std::dec;
    zeros += a.p[e] == 0;
    tiny += a.p[e] != 0 && bf16_to_float(a.p[e]) < 0x1p-120f;
  }
  EXPECT_EQ(differ, 0u) << "of " << s.size();
  EXPECT_GT(zeros, s.size() / 20) << "the exponents should reach below -126";
  EXPECT_GT(tiny, 0u) << "the exponents should reach just above -126";
  for (int i = 0; i < rows; ++i) {
    EXPECT_EQ(std::bit_cast<std::uint32_t>(a.m2[i]), std::bit_cast<std::uint32_t>(b.m2[i]))
        << "m2 row " << i;
    EXPECT_NEAR(a.l[i], b.l[i], 1e-6f * std::fabs(b.l[i])) << "l row " << i;
  }
  EXPECT_EQ(a.part, b.part);
  EXPECT_EQ(a.acc, b.acc);
  EXPECT_EQ(a.comp, b.comp);
}

// The rows' prefetch shares name each 64-byte line of a range once, for
// ranges shorter than a line, than one line a row, and of a partial last line.
TEST(SoftmaxTilePrefetch, RowSharesNameEachLineOnce) {
  for (const std::size_t bytes : {std::size_t{0}, std::size_t{1}, std::size_t{64}, std::size_t{100},
                                  std::size_t{64 * 37}, std::size_t{131072 + 7}})
    for (const int rows : {1, 7, 37, 128, 256}) {
      const long lines = static_cast<long>((bytes + 63) / 64);
      long next = 0;
      for (int i = 0; i < rows; ++i) {
        const LineSpan span = prefetch_share(bytes, rows, i);
        EXPECT_EQ(span.first, next) << bytes << " bytes, " << rows << " rows, row " << i;
        EXPECT_LE(span.first, span.last) << bytes << " bytes, " << rows << " rows, row " << i;
        next = span.last;
      }
      EXPECT_EQ(next, lines) << bytes << " bytes, " << rows << " rows";
    }
}

// A prefetch is a hint: with ranges to pull in (one null, one shorter than a
// line, one of more lines than the tile has vectors, unaligned), every
// output of the step is the same bits as without, on each path this CPU runs
// and for f32 and bf16 probabilities; hidden rows take the other branch.
TEST(SoftmaxTilePrefetch, LeavesEveryOutputBitAlone) {
  constexpr int rows = 37, bk = 272, d = 24;
  std::vector<float> s(static_cast<std::size_t>(rows) * bk), m2(rows);
  fill_seeded(s.data(), DType::f32, s.size(), 94, 0, 20.0f);
  fill_seeded(m2.data(), DType::f32, m2.size(), 95, 0, 4.0f);
  for (int j = 0; j < bk; ++j) s[static_cast<std::size_t>(5) * bk + j] = -kInf;
  m2[5] = -kInf;
  const std::vector<char> far(300000, 1);
  const std::vector<float> lanes(static_cast<std::size_t>(rows) * kLanes, 0.5f);
  auto run = [&](VectorIsa isa, bool bf16_out, const SoftmaxTile::Prefetch(&pf)[2]) {
    return softmax_step(isa, s, m2, lanes, rows, bk, d, bf16_out, 0.9f, 96, pf);
  };
  const SoftmaxTile::Prefetch cases[][2] = {
      {{far.data() + 3, far.size() - 3}, {}},
      {{}, {far.data() + 17, 1}},
      {{far.data(), 64 * 37}, {far.data() + 1000, 5000}},
  };
  int ran = 0;
  for (const VectorIsa isa : {VectorIsa::avx512, VectorIsa::avx2, VectorIsa::generic}) {
    if (!cpu_runs(isa)) continue;
    for (const bool bf16_out : {false, true}) {
      const StepOut want = run(isa, bf16_out, kNoPrefetch);
      for (const auto& pf : cases) {
        const StepOut got = run(isa, bf16_out, pf);
        const std::string what = std::string(vector_isa_name(isa)) + (bf16_out ? " bf16" : " f32");
        EXPECT_EQ(got.p, want.p) << what;
        EXPECT_EQ(0, std::memcmp(got.s.data(), want.s.data(), s.size() * sizeof(float))) << what;
        EXPECT_EQ(got.m2, want.m2) << what;
        EXPECT_EQ(got.lanes, want.lanes) << what;
        EXPECT_EQ(got.lcomp, want.lcomp) << what;
        EXPECT_EQ(got.part, want.part) << what;
        EXPECT_EQ(got.acc, want.acc) << what;
        EXPECT_EQ(got.comp, want.comp) << what;
        ++ran;
      }
    }
  }
  EXPECT_GE(ran, 6) << "the generic path runs everywhere";
}

// ---- compensated_add -----------------------------------------------------------

class CompensatedAdd : public ::testing::TestWithParam<VectorIsa> {
 protected:
  void SetUp() override {
    if (!cpu_runs(GetParam()))
      GTEST_SKIP() << "this CPU cannot execute the " << vector_isa_name(GetParam()) << " path";
  }
};

// The same small values added 2^18 times, the kernel's situation on a genome:
// a plain fp32 sum drifts by 1e-4 and more, the compensated total
// (sum - comp) stays within a few ulps of the exact sum. 67 elements cover
// every vector width and a remainder.
TEST_P(CompensatedAdd, KeepsWhatAPlainFp32SumLoses) {
  constexpr int n = 67, adds = 1 << 18;
  std::vector<float> x(n), sum(n, 0.0f), comp(n, 0.0f), plain(n, 0.0f);
  for (int e = 0; e < n; ++e) x[e] = 0.1f * (1.0f + static_cast<float>(e) / 64.0f);
  for (int i = 0; i < adds; ++i) {
    compensated_add(sum.data(), comp.data(), x.data(), n, GetParam());
    for (int e = 0; e < n; ++e) plain[e] += x[e];
  }
  double plain_worst = 0;
  for (int e = 0; e < n; ++e) {
    const double exact = static_cast<double>(x[e]) * adds;
    const double total = static_cast<double>(sum[e]) - comp[e];
    EXPECT_LE(std::fabs(total - exact), 4 * std::ldexp(exact, -24)) << "element " << e;
    plain_worst = std::max(plain_worst, std::fabs(plain[e] - exact) / exact);
  }
  EXPECT_GT(plain_worst, 1e-4) << "the input is too easy to show compensation";
}

INSTANTIATE_TEST_SUITE_P(Kernel, CompensatedAdd,
                         ::testing::Values(VectorIsa::avx512, VectorIsa::avx2, VectorIsa::generic),
                         [](const ::testing::TestParamInfo<VectorIsa>& param) {
                           return std::string(vector_isa_name(param.param));
                         });

// ---- mask_tile -------------------------------------------------------------------

// ---- bf16 tile products -----------------------------------------------------------------

struct Bf16GemmCase {
  int m, n, k;
  bool accumulate;
};

// C = A·B (+ C) from bf16 operands, A in the VNNI pair layout, against a
// double sum of the same bf16 values; libxsmm's kernel (where it makes one)
// and the portable loops alike. Products of two bf16 are exact in fp32, so
// only the k-term sum rounds: |error| <= k · 2^-24 · sum|a·b| <= 1e-4 here.
class TileGemmBf16Case : public ::testing::TestWithParam<Bf16GemmCase> {};
TEST_P(TileGemmBf16Case, MatchesADoubleSumOfTheSameValues) {
  const auto [m, n, k, accumulate] = GetParam();
  std::vector<float> a(static_cast<std::size_t>(m) * k), b(static_cast<std::size_t>(k) * n),
      c0(static_cast<std::size_t>(m) * n);
  fill_seeded(a.data(), DType::f32, a.size(), 71);
  fill_seeded(b.data(), DType::f32, b.size(), 72);
  fill_seeded(c0.data(), DType::f32, c0.size(), 73);
  std::vector<std::uint16_t> a_vnni(a.size()), b_bf16(b.size());
  for (int p = 0; p < k; ++p)
    for (int i = 0; i < m; ++i)  // a is column-major (m x k): a[p * m + i]
      a_vnni[(static_cast<std::size_t>(p / 2) * m + i) * 2 + p % 2] =
          float_to_bf16(a[static_cast<std::size_t>(p) * m + i]);
  for (std::size_t e = 0; e < b.size(); ++e) b_bf16[e] = float_to_bf16(b[e]);
  for (const Bf16Gemm want : {Bf16Gemm::amx, Bf16Gemm::libxsmm, Bf16Gemm::portable}) {
    const TileGemmBf16 g(m, n, k, k, m, accumulate, want);
    if (g.runs() != want) continue;  // no AMX, a shape it does not take, or no libxsmm kernel
    std::vector<float> c = c0;
    g(a_vnni.data(), b_bf16.data(), c.data());
    double worst = 0;
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) {
        double ref = accumulate ? c0[static_cast<std::size_t>(j) * m + i] : 0.0;
        for (int p = 0; p < k; ++p)
          ref += static_cast<double>(
                     bf16_to_float(a_vnni[(static_cast<std::size_t>(p / 2) * m + i) * 2 + p % 2])) *
                 bf16_to_float(b_bf16[static_cast<std::size_t>(j) * k + p]);
        worst = std::max(worst, std::abs(c[static_cast<std::size_t>(j) * m + i] - ref));
      }
    EXPECT_LE(worst, 1e-4) << bf16_gemm_name(want);
  }
}
INSTANTIATE_TEST_SUITE_P(
    Kernel, TileGemmBf16Case,
    ::testing::Values(Bf16GemmCase{256, 128, 128, false}, Bf16GemmCase{128, 16, 64, true},
                      Bf16GemmCase{1, 16, 256, true}, Bf16GemmCase{65, 32, 256, false},
                      Bf16GemmCase{3, 16, 2, false}, Bf16GemmCase{64, 256, 66, true},
                      Bf16GemmCase{128, 256, 64, true}, Bf16GemmCase{64, 32, 256, false}),
    [](const ::testing::TestParamInfo<Bf16GemmCase>& param) {
      const Bf16GemmCase& c = param.param;
      return "m" + std::to_string(c.m) + "_n" + std::to_string(c.n) + "_k" + std::to_string(c.k) +
             (c.accumulate ? "_acc" : "");
    });

// The dot path is a different computation from fp32 products of the same
// rounded values (pairs summed inside vdpbf16ps, the scale on the scores):
// a hook that selected the same code would give equal bits; the report names
// the path that ran; a CPU without the ISA refuses it.
TEST(Bf16Products, DotAndFp32PathsRunTheirOwnCode) {
  if (!cpu_features().avx512_bf16) {
    AttnParams p = AttnParams::dense(nullptr, nullptr, nullptr, DType::f32, 1, 1, 1, 0, 0, 16);
    p.compute = ComputeType::bf16;
    p.cpu.bf16 = Bf16Products::dot;
    EXPECT_THROW(p.validate(), Error);
    EXPECT_EQ(resolve_bf16_products(Bf16Products::native), Bf16Products::fp32);
    GTEST_SKIP() << "this CPU has no AVX512_BF16: checked that dot is refused and native is fp32";
  }
  EXPECT_EQ(resolve_bf16_products(Bf16Products::native),
            cpu_features().amx_bf16 ? Bf16Products::amx : Bf16Products::dot);
  test::Problem pr;
  pr.n_q = 200;
  pr.n_kv = 700;
  pr.head_dim = 65;  // odd: the dot path pads Q·K^T's depth to 66
  pr.causal = true;
  pr.seed = 74;
  pr.compute = ComputeType::bf16;
  std::vector<std::vector<float>> outs;
  for (const Bf16Products b : {Bf16Products::dot, Bf16Products::fp32}) {
    pr.variant.bf16 = b;
    const test::Inputs in(pr);
    EXPECT_NE(
        kernel_implementation(in.dense).find(std::string("products=") + bf16_products_name(b)),
        std::string::npos)
        << kernel_implementation(in.dense);
    std::vector<float> o(static_cast<std::size_t>(pr.n_q * pr.head_dim * pr.heads_q));
    attention_forward(in.dense, o.data(), nullptr);
    outs.push_back(o);
  }
  EXPECT_NE(outs[0], outs[1]);
}

// The amx path runs AMX tiles where the shapes allow (D = 64: every product
// a multiple of 32): the report names it with no fallback. tdpbf16ps and
// vdpbf16ps both add each pair's exact products into fp32 with one rounding,
// in k order, so the two paths agree to the bit; an operand laid out wrong
// for the tiles would not. A CPU without AMX refuses it.
TEST(Bf16Products, AmxPathRunsTiles) {
  test::Problem pr;
  pr.n_q = 300;
  pr.n_kv = 600;
  pr.head_dim = 64;
  pr.causal = true;
  pr.seed = 75;
  pr.compute = ComputeType::bf16;
  pr.variant.bf16 = Bf16Products::amx;
  if (!cpu_features().amx_bf16) {
    const test::Inputs in(pr);
    EXPECT_THROW(in.dense.validate(), Error);
    GTEST_SKIP() << "this CPU has no usable AMX-BF16: checked that amx is refused";
  }
  std::vector<std::vector<float>> outs;
  for (const Bf16Products b : {Bf16Products::amx, Bf16Products::dot}) {
    pr.variant.bf16 = b;
    const test::Inputs in(pr);
    const std::string impl = kernel_implementation(in.dense);
    EXPECT_NE(impl.find(std::string("products=") + bf16_products_name(b)), std::string::npos)
        << impl;
    EXPECT_EQ(impl.find("(qk:"), std::string::npos) << impl;
    std::vector<float> o(static_cast<std::size_t>(pr.n_q * pr.head_dim * pr.heads_q));
    attention_forward(in.dense, o.data(), nullptr);
    outs.push_back(o);
  }
  EXPECT_EQ(outs[0], outs[1]);
}

// The rules the mask and tile tests run: none, causal, windows on one or
// both sides, causal with a window, a window of 0 (the diagonal only).
std::vector<std::pair<std::string, Visibility>> visibility_rules() {
  return {{"all", Visibility::of(false)},
          {"causal", Visibility::of(true)},
          {"left3", Visibility::of(false, {3, kUnboundedWindow})},
          {"left2_right1", Visibility::of(false, {2, 1})},
          {"causal_left4", Visibility::of(true, {4, kUnboundedWindow})},
          {"causal_right5_capped", Visibility::of(true, {kUnboundedWindow, 5})},
          {"window0", Visibility::of(false, {0, 0})}};
}

TEST(Visibility, CausalCapsTheWindowsRightSide) {
  EXPECT_EQ(Visibility::of(true).right, 0);
  EXPECT_EQ(Visibility::of(true).left, kUnboundedWindow);
  EXPECT_EQ(Visibility::of(true, {7, 9}).right, 0);
  EXPECT_EQ(Visibility::of(false, {7, 9}).right, 9);
  EXPECT_TRUE(Visibility::of(false).all());
  const Visibility w = Visibility::of(false, {2, 1});
  EXPECT_TRUE(w.sees(10, 8) && w.sees(10, 11) && w.sees(10, 10));
  EXPECT_FALSE(w.sees(10, 7) || w.sees(10, 12));
}

TEST(Window, TextRoundTripsAndBadTextIsOneUsageError) {
  for (const char* t : {"none", "0", "4096", "4096,0", "0,0", "inf,16"})
    EXPECT_EQ(Window::parse(t, "--window").text(), t);
  EXPECT_EQ(Window::parse("3,inf", "x").text(), "3");  // the right side's default
  EXPECT_EQ(Window::parse("inf,inf", "x").text(), "none");
  EXPECT_EQ(Window::parse("12", "x").right, kUnboundedWindow);
  EXPECT_EQ(Window::parse("12,3", "x").right, 3);
  EXPECT_FALSE(Window::parse("none", "x").bounded());
  for (const char* bad : {"", "-1", "1,", ",2", "1,2,3", "abc", "1.5", "9223372036854775807"}) {
    try {
      Window::parse(bad, "--window");
      ADD_FAILURE() << "accepted \"" << bad << "\"";
    } catch (const Error& e) {
      EXPECT_EQ(e.error_class(), ErrorClass::usage);
      EXPECT_NE(std::string(e.what()).find("--window must be"), std::string::npos) << e.what();
    }
  }
}

TEST(MaskTile, HidesWhatTheRuleHidesAndColumnsPastTheBlock) {
  const int rows = 4, bk = 16, k_valid = 12;
  const std::int64_t q_pos[rows] = {5, 10, 20, -1};
  std::int64_t k_pos[bk];
  for (int j = 0; j < bk; ++j) k_pos[j] = 2 * j;  // 0, 2, ..., 30
  for (const auto& [name, vis] : visibility_rules()) {
    std::vector<float> s(rows * bk);
    for (int i = 0; i < rows * bk; ++i) s[i] = static_cast<float>(i) + 0.5f;
    const std::vector<float> before = s;
    mask_tile(s.data(), rows, bk, q_pos, k_pos, k_valid, vis);
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < bk; ++j) {
        const bool hidden = j >= k_valid || !vis.sees(q_pos[i], k_pos[j]);
        const float got = s[i * bk + j];
        if (hidden)
          EXPECT_EQ(got, -kInf) << "row " << i << " col " << j << " " << name;
        else
          EXPECT_EQ(got, before[i * bk + j]) << "row " << i << " col " << j << " " << name;
      }
  }
  // A whole tile, nothing hidden: untouched.
  std::vector<float> s(rows * bk, 1.0f);
  mask_tile(s.data(), rows, bk, q_pos, k_pos, bk, Visibility{});
  for (float x : s) EXPECT_EQ(x, 1.0f);
}

// ---- classify_tile ----------------------------------------------------------------

static_assert(classify_tile(0, 63, 64, 127, Visibility::of(true)) == TileKind::empty);
static_assert(classify_tile(64, 127, 0, 63, Visibility::of(true)) == TileKind::full);
static_assert(classify_tile(0, 63, 0, 63, Visibility::of(true)) == TileKind::diagonal);
static_assert(classify_tile(0, 63, 64, 127, Visibility::of(false)) == TileKind::full);
static_assert(classify_tile(1000, 1063, 0, 63, Visibility::of(true, {100, 0})) == TileKind::empty);

// Against the definition on every contiguous tile pair of small ranges,
// under every rule: empty when no (query, key) pair is visible, full when
// all are.
TEST(ClassifyTile, MatchesPairwiseDefinition) {
  const int n = 9;
  for (const auto& [name, vis] : visibility_rules())
    for (int q0 = 0; q0 < n; ++q0)
      for (int q1 = q0; q1 < n; ++q1)
        for (int k0 = 0; k0 < n; ++k0)
          for (int k1 = k0; k1 < n; ++k1) {
            int visible = 0, pairs = 0;
            for (int i = q0; i <= q1; ++i)
              for (int j = k0; j <= k1; ++j) {
                visible += vis.sees(i, j);
                ++pairs;
              }
            const TileKind expect = visible == 0       ? TileKind::empty
                                    : visible == pairs ? TileKind::full
                                                       : TileKind::diagonal;
            ASSERT_EQ(classify_tile(q0, q1, k0, k1, vis), expect)
                << name << ": q [" << q0 << ", " << q1 << "] k [" << k0 << ", " << k1 << "]";
          }
}

// ---- Positions -------------------------------------------------------------------

TEST(Positions, ContiguousStridedAndSegments) {
  const Positions none;
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(none.size(), 0);

  const Positions c = Positions::contiguous(5, 3);
  EXPECT_EQ(c.size(), 3);
  EXPECT_EQ(c[0], 5);
  EXPECT_EQ(c[2], 7);

  const Positions s = Positions::strided(1, 3, 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(s[i], 1 + 3 * i);

  Positions z;  // zigzag rank 0 of 2 over 16 tokens: chunks 0 and 3
  z.append({0, 1, 4}).append({12, 1, 4});
  EXPECT_EQ(z.size(), 8);
  EXPECT_EQ(z.segments().size(), 2u);
  EXPECT_EQ(z[3], 3);
  EXPECT_EQ(z[4], 12);
  EXPECT_EQ(z[7], 15);
  std::int64_t out[4];
  z.fill(2, 4, out);
  EXPECT_EQ(std::vector<std::int64_t>(out, out + 4), (std::vector<std::int64_t>{2, 3, 12, 13}));

  Positions e;
  e.append({7, 1, 0});  // an empty segment adds nothing
  EXPECT_TRUE(e.empty());
}

// fill over every sub-range agrees with operator[], across segment boundaries.
TEST(Positions, FillAgreesWithIndexEverywhere) {
  Positions p;
  p.append({3, 2, 5}).append({100, 7, 1}).append({200, 1, 6}).append({0, 5, 3});
  const std::int64_t n = p.size();
  ASSERT_EQ(n, 15);
  std::vector<std::int64_t> out(static_cast<std::size_t>(n));
  for (std::int64_t b = 0; b <= n; ++b)
    for (std::int64_t k = 0; b + k <= n; ++k) {
      std::fill(out.begin(), out.end(), -1);
      p.fill(b, k, out.data());
      for (std::int64_t i = 0; i < k; ++i)
        ASSERT_EQ(out[i], p[b + i]) << "fill(" << b << ", " << k << ") row " << i;
      for (std::int64_t i = k; i < n; ++i) ASSERT_EQ(out[i], -1) << "wrote past n";
    }
}

TEST(Positions, RefusesBadSegmentsAndRows) {
  Positions p;
  EXPECT_THROW(p.append({0, 0, 4}), Error);   // stride 0
  EXPECT_THROW(p.append({0, -1, 4}), Error);  // decreasing
  EXPECT_THROW(p.append({0, 1, -1}), Error);  // negative count
  p.append({0, 1, 4});
  EXPECT_THROW(static_cast<void>(p[4]), Error);
  std::int64_t out[8];
  EXPECT_THROW(p.fill(2, 3, out), Error);
  EXPECT_THROW(p.fill(-1, 1, out), Error);
}

// ---- attention_flops -------------------------------------------------------------

AttnParams shape(std::int64_t b, std::int64_t hq, std::int64_t hkv, std::int64_t nq,
                 std::int64_t nkv, std::int64_t d, bool causal) {
  AttnParams p = AttnParams::dense(nullptr, nullptr, nullptr, DType::f32, b, hq, hkv, nq, nkv, d);
  p.causal = causal;
  return p;
}

// 4·D per visible pair, counted by brute force on the positions.
double brute_force_flops(const AttnParams& p) {
  double pairs = 0;
  for (std::int64_t i = 0; i < p.n_q; ++i)
    for (std::int64_t j = 0; j < p.n_kv; ++j) {
      const std::int64_t qi = p.q_pos.empty() ? i : p.q_pos[i];
      const std::int64_t kj = p.k_pos.empty() ? j : p.k_pos[j];
      pairs += (!p.causal || kj <= qi) && qi - kj <= p.window.left && kj - qi <= p.window.right;
    }
  return 4.0 * static_cast<double>(p.head_dim) * pairs * static_cast<double>(p.batch * p.heads_q);
}

TEST(AttentionFlops, NonCausalIsFourNNkvDHB) {
  EXPECT_EQ(attention_flops(shape(2, 8, 2, 1000, 777, 128, false)), 4.0 * 1000 * 777 * 128 * 8 * 2);
  EXPECT_EQ(attention_flops(shape(1, 1, 1, 1, 1, 1, false)), 4.0);
  EXPECT_EQ(attention_flops(shape(1, 4, 4, 0, 10, 64, false)), 0.0);
}

TEST(AttentionFlops, CausalContiguousIsTriangular) {
  for (std::int64_t n : {1, 7, 64, 129, 1000, 65536}) {
    const double expect =
        4.0 * 128 * 4 * 3 * static_cast<double>(n) * static_cast<double>(n + 1) / 2;
    EXPECT_EQ(attention_flops(shape(3, 4, 2, n, n, 128, true)), expect) << "n " << n;
  }
}

TEST(AttentionFlops, CausalOnRingPositionsMatchesPairCount) {
  struct Case {
    const char* name;
    Positions q, k;
  };
  Positions zz0, zz3;
  zz0.append({0, 1, 125}).append({875, 1, 125});
  zz3.append({375, 1, 125}).append({500, 1, 125});
  const Case cases[] = {
      {"zigzag_r0_vs_all", zz0, Positions::contiguous(0, 1000)},
      {"zigzag_r0_src3", zz0, zz3},
      {"zigzag_r3_src0", zz3, zz0},
      {"striped_r1_src2", Positions::strided(1, 4, 250), Positions::strided(2, 4, 250)},
      {"striped_r2_src1", Positions::strided(2, 4, 250), Positions::strided(1, 4, 250)},
      {"keys_all_future", Positions::contiguous(0, 100), Positions::contiguous(500, 64)},
  };
  for (const auto& c : cases) {
    AttnParams p = shape(2, 4, 1, c.q.size(), c.k.size(), 64, true);
    p.q_pos = c.q;
    p.k_pos = c.k;
    EXPECT_EQ(attention_flops(p), brute_force_flops(p)) << c.name;
  }
  AttnParams future = shape(1, 1, 1, 100, 64, 16, true);
  future.k_pos = Positions::contiguous(500, 64);
  EXPECT_EQ(attention_flops(future), 0.0);
}

// Windows on every kind of ring position, causal and not, against the pair
// count: the ring's flop counts and the benchmarks read attention_flops.
TEST(AttentionFlops, WindowsMatchPairCount) {
  Positions zz0;
  zz0.append({0, 1, 125}).append({875, 1, 125});
  const Positions qs[] = {Positions::contiguous(0, 1000), zz0, Positions::strided(2, 4, 250)};
  const Positions ks[] = {Positions::contiguous(0, 1000), Positions::strided(1, 4, 250),
                          Positions::contiguous(300, 200)};
  const Window windows[] = {
      {0, 0}, {7, kUnboundedWindow}, {100, 3}, {kUnboundedWindow, 50}, {5000, 5000}};
  for (const Positions& q : qs)
    for (const Positions& k : ks)
      for (const Window& w : windows)
        for (const bool causal : {false, true}) {
          AttnParams p = shape(1, 2, 1, q.size(), k.size(), 16, causal);
          p.q_pos = q;
          p.k_pos = k;
          p.window = w;
          EXPECT_EQ(attention_flops(p), brute_force_flops(p))
              << "window " << w.text() << (causal ? " causal" : "");
        }
  // A causal window of L keys costs about N·(L+1) pairs, not N²/2.
  AttnParams big = shape(1, 1, 1, 1 << 20, 1 << 20, 1, true);
  big.window = {4096, kUnboundedWindow};
  const double n = 1 << 20;
  EXPECT_EQ(attention_flops(big), 4.0 * (n * 4097 - 4096.0 * 4097 / 2));
}

// ---- seeded data -----------------------------------------------------------------

TEST(SeededData, AnySliceEqualsTheSliceOfTheWhole) {
  const std::size_t n = 10000;
  for (DType t : {DType::f32, DType::f16, DType::bf16}) {
    const std::size_t es = dtype_size(t);
    std::vector<std::byte> whole(n * es), again(n * es);
    fill_seeded(whole.data(), t, n, 77, 0, 2.5f);
    fill_seeded(again.data(), t, n, 77, 0, 2.5f);
    EXPECT_EQ(std::memcmp(whole.data(), again.data(), whole.size()), 0) << "not deterministic";
    // Slices starting anywhere, across the fill's internal 4096-element chunks.
    const std::size_t slices[][2] = {{0, 1}, {1234, 5000}, {4000, 300}, {4095, 2}, {9999, 1}};
    for (const auto& [first, count] : slices) {
      std::vector<std::byte> part(count * es);
      fill_seeded(part.data(), t, count, 77, first, 2.5f);
      EXPECT_EQ(std::memcmp(part.data(), whole.data() + first * es, part.size()), 0)
          << dtype_name(t) << " slice [" << first << ", " << first + count << ")";
    }
    std::vector<std::byte> other(n * es);
    fill_seeded(other.data(), t, n, 78, 0, 2.5f);
    EXPECT_NE(std::memcmp(whole.data(), other.data(), whole.size()), 0) << "seed ignored";
  }
}

TEST(SeededData, UniformInMinusAmplitudeToAmplitude) {
  std::vector<float> x(100000);
  fill_seeded(x.data(), DType::f32, x.size(), 5, 0, 3.0f);
  float lo = 0, hi = 0;
  double mean = 0;
  for (float v : x) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    mean += v;
  }
  mean /= static_cast<double>(x.size());
  EXPECT_GE(lo, -3.0f);
  EXPECT_LT(hi, 3.0f);
  EXPECT_LT(lo, -2.9f);  // and it does fill the range
  EXPECT_GT(hi, 2.9f);
  EXPECT_NEAR(mean, 0.0, 0.05);
  for (std::size_t i = 0; i < 1000; ++i) EXPECT_EQ(x[i], 3.0f * seeded_uniform(5, i));
}

// ---- compare_to_reference ----------------------------------------------------------

TEST(CompareToReference, FindsTheWorstElementAndTreatsInfinitiesRight) {
  const float x[] = {1.0f, 2.5f, -kInf, -3.0f};
  const double ref[] = {1.0, 2.0, -std::numeric_limits<double>::infinity(), -4.0};
  const Comparison c = compare_to_reference(x, ref, 4);
  EXPECT_EQ(c.worst, 3);
  EXPECT_DOUBLE_EQ(c.max_abs_err, 1.0);
  EXPECT_DOUBLE_EQ(c.scale, 4.0);  // largest finite |ref|
  EXPECT_DOUBLE_EQ(c.rel_err, 0.25);
  EXPECT_EQ(c.worst_value, -3.0);
  EXPECT_EQ(c.worst_ref, -4.0);

  const float bad[] = {1.0f, std::nanf(""), 0.0f};
  const double r3[] = {1.0, 1.0, 0.0};
  const Comparison cn = compare_to_reference(bad, r3, 3);
  EXPECT_EQ(cn.worst, 1);
  EXPECT_TRUE(std::isinf(cn.rel_err)) << "NaN must count as infinitely far";

  const float minf[] = {-kInf};
  const double zero[] = {0.0};
  EXPECT_TRUE(std::isinf(compare_to_reference(minf, zero, 1).rel_err));
}

}  // namespace
}  // namespace ringattn
