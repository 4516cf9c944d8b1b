// FMA (and bf16 dot) peak microbenchmarks. The loop bodies are intrinsics in functions with
// their own target attribute, so the binary runs on any x86-64 and measures
// the widest unit present. The accumulators feed a result that is returned,
// and the multiplier comes from a volatile, so nothing can be folded away.
#include "core/fma_peak.hpp"

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

#include "core/amx_tiles.hpp"
#include "core/cpu.hpp"
#include "core/timer.hpp"

namespace ringattn {
namespace {

volatile float g_mul = 0.9999f;
volatile float g_add = 0.0001f;

constexpr long kInner = 1 << 16;

#define RA_FMA12(FMA)   \
  a0 = FMA(a0, b, c);   \
  a1 = FMA(a1, b, c);   \
  a2 = FMA(a2, b, c);   \
  a3 = FMA(a3, b, c);   \
  a4 = FMA(a4, b, c);   \
  a5 = FMA(a5, b, c);   \
  a6 = FMA(a6, b, c);   \
  a7 = FMA(a7, b, c);   \
  a8 = FMA(a8, b, c);   \
  a9 = FMA(a9, b, c);   \
  a10 = FMA(a10, b, c); \
  a11 = FMA(a11, b, c);

// The body every vector peak loop shares, for `VEC` lanes of `LANES`
// floats: 12 independent accumulators seeded 0..11, whole blocks of kInner
// iterations of RA_FMA12(FMA) until `seconds`, then their sum into *sink so
// none is dead. Expects b, c, seconds and sink in scope; leaves `blocks`. A
// macro, not a template: the intrinsics inline only inside each loop's own
// target-attributed function.
#define RA_PEAK_LOOP(VEC, SET1, ADD, STORE, LANES, FMA)                                       \
  VEC a0 = SET1(0), a1 = SET1(1), a2 = SET1(2), a3 = SET1(3), a4 = SET1(4), a5 = SET1(5),     \
      a6 = SET1(6), a7 = SET1(7), a8 = SET1(8), a9 = SET1(9), a10 = SET1(10), a11 = SET1(11); \
  Timer t;                                                                                    \
  long blocks = 0;                                                                            \
  do {                                                                                        \
    for (long i = 0; i < kInner; ++i) {                                                       \
      RA_FMA12(FMA)                                                                           \
    }                                                                                         \
    ++blocks;                                                                                 \
  } while (t.seconds() < seconds);                                                            \
  VEC s = ADD(ADD(ADD(a0, a1), ADD(a2, a3)), ADD(ADD(a4, a5), ADD(a6, a7)));                  \
  s = ADD(s, ADD(ADD(a8, a9), ADD(a10, a11)));                                                \
  alignas(sizeof(VEC)) float r[LANES];                                                        \
  STORE(r, s);                                                                                \
  float total = 0;                                                                            \
  for (float x : r) total += x;                                                               \
  *sink = total;

// Returns flops done; runs whole blocks of kInner iterations until `seconds`.
__attribute__((target("avx512f"), noinline)) double fma_loop_avx512(double seconds, float* sink) {
  const __m512 b = _mm512_set1_ps(g_mul), c = _mm512_set1_ps(g_add);
  RA_PEAK_LOOP(__m512, _mm512_set1_ps, _mm512_add_ps, _mm512_store_ps, 16, _mm512_fmadd_ps)
  return static_cast<double>(blocks) * kInner * 12 * 32;
}

__attribute__((target("avx2,fma"), noinline)) double fma_loop_avx2(double seconds, float* sink) {
  const __m256 b = _mm256_set1_ps(g_mul), c = _mm256_set1_ps(g_add);
  RA_PEAK_LOOP(__m256, _mm256_set1_ps, _mm256_add_ps, _mm256_store_ps, 8, _mm256_fmadd_ps)
  return static_cast<double>(blocks) * kInner * 12 * 16;
}

// No FMA unit: a multiply-add on SSE lanes, counted as 2 flops a lane.
__attribute__((noinline)) double fma_loop_generic(double seconds, float* sink) {
  const __m128 b = _mm_set1_ps(g_mul), c = _mm_set1_ps(g_add);
  auto fma = [](__m128 a, __m128 x, __m128 y) { return _mm_add_ps(_mm_mul_ps(a, x), y); };
  RA_PEAK_LOOP(__m128, _mm_set1_ps, _mm_add_ps, _mm_store_ps, 4, fma)
  return static_cast<double>(blocks) * kInner * 12 * 8;
}

__attribute__((target("avx512f,avx512bf16"), noinline)) double dot_loop_bf16(double seconds,
                                                                             float* sink) {
  const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(g_mul), _mm512_set1_ps(g_mul));
  const __m512bh c = _mm512_cvtne2ps_pbh(_mm512_set1_ps(g_add), _mm512_set1_ps(g_add));
  RA_PEAK_LOOP(__m512, _mm512_set1_ps, _mm512_add_ps, _mm512_store_ps, 16, _mm512_dpbf16_ps)
  return static_cast<double>(blocks) * kInner * 12 * 64;
}

// AMX: four independent 16 x 16 fp32 tiles, each += a 16 x 32 bf16 tile
// times a 16 x 16-pair one (tdpbf16ps: 16 · 16 · 32 · 2 flops).
__attribute__((target("amx-tile,amx-bf16"), noinline)) double amx_loop_bf16(double seconds,
                                                                            float* sink) {
  static const AmxTileConfig cfg;
  alignas(64) std::uint16_t ab[16 * 32];
  alignas(64) float c[16 * 16];
  std::fill_n(ab, 16 * 32, static_cast<std::uint16_t>(0x3f80));  // 1.0 in bf16
  _tile_loadconfig(&cfg);
  _tile_loadd(4, ab, 64);
  _tile_loadd(5, ab, 64);
  _tile_loadd(6, ab, 64);
  _tile_loadd(7, ab, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  Timer t;
  long blocks = 0;
  do {
    for (long i = 0; i < kInner; ++i) {
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
    ++blocks;
  } while (t.seconds() < seconds);
  _tile_stored(0, c, 64);
  _tile_release();
  *sink = c[0];
  return static_cast<double>(blocks) * kInner * 4 * 16 * 16 * 32 * 2;
}

// GFLOP/s of `threads` threads running loop at once, summed.
double run_on_threads(double (*loop)(double, float*), int threads, double seconds) {
  std::vector<double> flops(threads), secs(threads);
  std::vector<float> sink(threads);
  auto body = [&](int i) {
    loop(0.02, &sink[i]);  // warm up: clocks and the vector unit's power state
    Timer t;
    flops[i] = loop(seconds, &sink[i]);
    secs[i] = t.seconds();
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back(body, i);
  body(0);
  for (auto& th : pool) th.join();
  double gflops = 0;
  for (int i = 0; i < threads; ++i) gflops += flops[i] / secs[i] / 1e9;
  // Keep the sinks observable.
  volatile float keep = 0;
  for (float s : sink) keep = keep + s;
  return gflops;
}

}  // namespace

FmaPeak measure_fma_peak(int threads, double seconds) {
  FmaPeak out;
  out.threads = std::max(1, threads);
  out.isa = vector_isa();
  auto loop = out.isa == "avx512" ? fma_loop_avx512
              : out.isa == "avx2" ? fma_loop_avx2
                                  : fma_loop_generic;
  out.gflops = run_on_threads(loop, out.threads, seconds);
  return out;
}

namespace {

// loop's peak on `threads` threads where the CPU has the unit, else 0, "none".
FmaPeak measure_if(bool present, const char* isa, double (*loop)(double, float*), int threads,
                   double seconds) {
  FmaPeak out;
  out.threads = std::max(1, threads);
  out.isa = present ? isa : "none";
  if (present) out.gflops = run_on_threads(loop, out.threads, seconds);
  return out;
}

}  // namespace

FmaPeak measure_bf16_dot_peak(int threads, double seconds) {
  return measure_if(cpu_features().avx512_bf16, "avx512_bf16", dot_loop_bf16, threads, seconds);
}

FmaPeak measure_amx_bf16_peak(int threads, double seconds) {
  return measure_if(cpu_features().amx_bf16, "amx_bf16", amx_loop_bf16, threads, seconds);
}

}  // namespace ringattn
