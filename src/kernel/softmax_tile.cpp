// One portable source for the softmax step, instantiated per vector width and
// compiled per ISA through target attributes on thin wrappers (the template
// bodies are always_inline, so they take the wrapper's ISA). Nothing here
// needs -ffast-math: -inf must survive, and reductions are written out.
#include "kernel/softmax_tile.hpp"

// Vector types pass between always_inline helpers of internal linkage only, so
// the ABI note GCC gives for them (-Wpsabi) cannot matter here.
#pragma GCC diagnostic ignored "-Wpsabi"

#include <cstring>
#include <string>
#include <utility>

#include "core/cpu.hpp"
#include "core/error.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace ringattn {
namespace {

#define RA_INLINE inline __attribute__((always_inline))

template <int W>
struct Vec;
template <>
struct Vec<4> {
  typedef float f __attribute__((vector_size(16)));
  typedef std::int32_t i __attribute__((vector_size(16)));
};
template <>
struct Vec<8> {
  typedef float f __attribute__((vector_size(32)));
  typedef std::int32_t i __attribute__((vector_size(32)));
};
template <>
struct Vec<16> {
  typedef float f __attribute__((vector_size(64)));
  typedef std::int32_t i __attribute__((vector_size(64)));
};

// x in lane 0, then every lane from lane 0 by a constant shuffle: one
// vbroadcastss. Lane-by-lane stores (or x - VF{}) made GCC 12 build a
// run-time splat from 16 masked broadcasts, ~40 instructions per row of the
// softmax step.
template <class VF, int... I>
RA_INLINE VF splat_lanes(float x, std::integer_sequence<int, I...>) {
  VF v{};
  v[0] = x;
  return __builtin_shufflevector(v, v, (I * 0)...);
}
template <class VF>
RA_INLINE VF splat(float x) {
  return splat_lanes<VF>(x, std::make_integer_sequence<int, sizeof(VF) / sizeof(float)>{});
}

template <class VF>
RA_INLINE VF loadv(const float* p) {
  VF v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <class VF>
RA_INLINE void storev(float* p, const VF& v) {
  std::memcpy(p, &v, sizeof v);
}

// The polynomial of exp2v: 2^f for |f| <= 1/2. Degree 6 interpolating 2^f
// at the 7 Chebyshev nodes of [-1/2, 1/2]: 1.0e-7 worst relative error in
// fp32 (Taylor of the same degree: 2.2e-7). kBf16: degree 4 at the 5
// Chebyshev nodes (3.5e-6), for results rounded to bf16 (2^-9) anyway. p
// goes out by reference: clang refuses an AVX-512 vector returned by value
// to exp2v_avx512 from a function compiled without AVX-512.
template <class VF, bool kBf16>
RA_INLINE void exp2_poly(const VF& f, VF& p) {
  if constexpr (kBf16) {
    p = splat<VF>(9.666368515391557e-3f);
    p = p * f + 5.592197584226425e-2f;
    p = p * f + 2.4022349038020266e-1f;
    p = p * f + 6.931210452034258e-1f;
    p = p * f + 1.0f;
  } else {
    p = splat<VF>(1.5461444683652947e-4f);
    p = p * f + 1.3400428178361574e-3f;
    p = p * f + 9.6180566785900900e-3f;
    p = p * f + 5.5503272266688435e-2f;
    p = p * f + 2.4022650922288005e-1f;
    p = p * f + 6.9314720670283330e-1f;
    p = p * f + 1.0f;
  }
}

// The AVX-512 wrappers' target, which exp2v_avx512 must carry exactly (a
// narrower one fails to inline: "target specific option mismatch").
#define RA_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))

#if defined(__x86_64__)
// exp2v's AVX-512 form, the same values bit for bit (checked against it over
// all 2^32 inputs, x <= 1 for kNonPositive): f = x - round-to-nearest-even(x)
// by vreduceps (AVX512DQ), exact, so r = x - f is the integer the magic
// number gives for |x| < 2^22; the same polynomial; and p · 2^r by vscalefps
// (one rounding, as p times the built 2^r), zero-masked where !(x >= -126):
// below -126, -inf and NaN give 0 as before, so no lower clamp is needed. 10
// instructions for kNonPositive (exp2v's bit building and clamps took 16);
// vreduceps for vrndscaleps made the softmax step ~11% faster on the Intel
// Xeon (BM_SoftmaxTile 128x256). Plain inline, not always_inline: it carries the
// target, the templates between it and the wrappers do not, and GCC and
// clang refuse always_inline across that; it is inlined into the wrappers
// all the same. The vectors go by reference, as to exp2_poly.
template <bool kNonPositive, bool kBf16>
inline RA_AVX512 void exp2v_avx512(const Vec<16>::f& x, Vec<16>::f& out) {
  __m512 xc = x;
  // The masked forms: the unmasked ones' _mm512_undefined_ps trips GCC 12's
  // -Wuninitialized.
  if constexpr (!kNonPositive)
    xc = _mm512_mask_min_ps(xc, static_cast<__mmask16>(-1), xc, _mm512_set1_ps(127.0f));
  const Vec<16>::f f = _mm512_mask_reduce_ps(xc, static_cast<__mmask16>(-1), xc,
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = xc - f;
  Vec<16>::f p;
  exp2_poly<Vec<16>::f, kBf16>(f, p);
  const __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-126.0f), _CMP_GE_OQ);
  out = _mm512_maskz_scalef_ps(keep, p, r);
}
#endif

// 2^x: round-to-nearest range reduction (magic number: exact for |x| < 2^22),
// exp2_poly on [-1/2, 1/2], exponent built from bits. x < -126 (including
// -inf) gives exactly 0. kNonPositive skips the upper clamp where the caller
// guarantees x <= 0 (scores minus their running max). kBf16 takes the degree
// 4 polynomial, where the result is rounded to bf16 anyway. W = 16 on x86-64:
// exp2v_avx512, the same values in fewer instructions.
template <int W, bool kNonPositive = false, bool kBf16 = false>
RA_INLINE typename Vec<W>::f exp2v(const typename Vec<W>::f& x) {
  using VF = typename Vec<W>::f;
  using VI = typename Vec<W>::i;
#if defined(__x86_64__)
  if constexpr (W == 16) {
    VF out;
    exp2v_avx512<kNonPositive, kBf16>(x, out);
    return out;
  }
#endif
  const VF lo = splat<VF>(-127.0f);
  VF xc = x > lo ? x : lo;  // one vmaxps, and -inf -> lo
  if constexpr (!kNonPositive) {
    const VF hi = splat<VF>(127.0f);
    xc = xc > hi ? hi : xc;
  }
  const VF magic = splat<VF>(12582912.0f);  // 1.5 · 2^23
  const VF r = (xc + magic) - magic;
  VF p;
  exp2_poly<VF, kBf16>(xc - r, p);
  const VI n = __builtin_convertvector(r, VI);
  VF scale;
  const VI bits = (n + 127) << 23;
  std::memcpy(&scale, &bits, sizeof scale);
  const VF out = p * scale;
  return x < splat<VF>(-126.0f) ? splat<VF>(0.0f) : out;
}

// Lanes of v with lane i taken from lane i ^ X: a constant shuffle.
// __builtin_shufflevector (constant indices) is what gcc (12+) and clang both
// have; gcc's __builtin_shuffle (mask vector) is unknown to clang.
template <int W, int X, int... I>
RA_INLINE typename Vec<W>::f swap_lanes(const typename Vec<W>::f& v,
                                        std::integer_sequence<int, I...>) {
  return __builtin_shufflevector(v, v, (I ^ X)...);
}

// Horizontal max by halving with constant shuffles (log2 W steps).
template <int W>
RA_INLINE float hmax(const typename Vec<W>::f& x) {
  using VF = typename Vec<W>::f;
  constexpr auto lanes = std::make_integer_sequence<int, W>{};
  VF v = x;
  if constexpr (W == 16) {
    const VF w = swap_lanes<W, 8>(v, lanes);
    v = w > v ? w : v;
  }
  if constexpr (W >= 8) {
    const VF w = swap_lanes<W, 4>(v, lanes);
    v = w > v ? w : v;
  }
  {
    const VF w = swap_lanes<W, 2>(v, lanes);
    v = w > v ? w : v;
  }
  {
    const VF w = swap_lanes<W, 1>(v, lanes);
    v = w > v ? w : v;
  }
  return v[0];
}

template <int W>
RA_INLINE typename Vec<W>::f round_bf16v(const typename Vec<W>::f& x) {
  using VF = typename Vec<W>::f;
  using VI = typename Vec<W>::i;
  VI u;
  std::memcpy(&u, &x, sizeof u);
  // Round to nearest even on the upper 16 bits (inputs here are finite, >= 0).
  u = (u + (0x7fff + ((u >> 16) & 1))) & ~0xffff;
  VF out;
  std::memcpy(&out, &u, sizeof out);
  return out;
}

// The upper halves of x's lanes (bf16 bits once round_bf16v has rounded x).
template <int W>
RA_INLINE void store_bf16v(std::uint16_t* p, const typename Vec<W>::f& x) {
  typedef std::uint16_t VH __attribute__((vector_size(2 * W)));
  typename Vec<W>::i u;
  std::memcpy(&u, &x, sizeof u);
  const VH h = __builtin_convertvector(u >> 16, VH);  // vpmovdw on AVX-512
  std::memcpy(p, &h, sizeof h);
}

#if defined(__x86_64__)
// The target of the bf16 dot path's softmax wrapper, which the helper below
// carries exactly (as exp2v_avx512 carries RA_AVX512).
#define RA_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx512bf16")))

// round_bf16v + store_bf16v for W = 16 by one vcvtneps2bf16: the bf16 bits
// to out, and their value as floats (what l sums) back in `rounded`. The
// same bits for every exp2v result: it rounds to nearest even like
// round_bf16v, and the inputs it would flush (denormals) never occur: exp2v
// gives 0 below -126 and at least 2^-126, the smallest normal, from there
// (r = -126 takes f >= 0, so p >= 1). Plain inline for the reason
// exp2v_avx512 is; vectors by reference likewise.
inline RA_AVX512_BF16 void round_store_bf16_avx512(const Vec<16>::f& x, std::uint16_t* out,
                                                   Vec<16>::f& rounded) {
  const __m256bh h = _mm512_cvtneps_pbh(x);
  __m256i bits;
  std::memcpy(&bits, &h, sizeof bits);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), bits);
  // The zero-masked forms, as in exp2v_avx512 (GCC 12's -Wuninitialized).
  const __mmask16 all = static_cast<__mmask16>(-1);
  rounded =
      _mm512_castsi512_ps(_mm512_maskz_slli_epi32(all, _mm512_maskz_cvtepu16_epi32(all, bits), 16));
}
#endif

// The largest of s[0, bk), by four running maxima: one would chain every
// vmaxps on the last (the same maximum either way, max being exact).
template <int W>
RA_INLINE float row_max(const float* s, int bk) {
  using VF = typename Vec<W>::f;
  VF m0 = splat<VF>(-__builtin_inff()), m1 = m0, m2 = m0, m3 = m0;
  int j = 0;
  for (; j + 4 * W <= bk; j += 4 * W) {
    const VF x0 = loadv<VF>(s + j), x1 = loadv<VF>(s + j + W);
    const VF x2 = loadv<VF>(s + j + 2 * W), x3 = loadv<VF>(s + j + 3 * W);
    m0 = x0 > m0 ? x0 : m0;  // vmaxps
    m1 = x1 > m1 ? x1 : m1;
    m2 = x2 > m2 ? x2 : m2;
    m3 = x3 > m3 ? x3 : m3;
  }
  for (; j < bk; j += W) {
    const VF x = loadv<VF>(s + j);
    m0 = x > m0 ? x : m0;
  }
  m1 = m1 > m3 ? m1 : m3;
  m0 = m0 > m2 ? m0 : m2;
  return hmax<W>(m0 > m1 ? m0 : m1);
}

// Row i's lines of one of t.prefetch's ranges (prefetch_share), `per` of
// them at each score vector, so that the requests spread over the row
// instead of queueing at once. Plain scalars, so that they stay in registers.
struct RowPrefetch {
  const char* next = nullptr;  // the next line to ask for
  long left = 0;               // lines still to ask for
  long per = 0;                // lines per score vector
  RA_INLINE RowPrefetch(const SoftmaxTile::Prefetch& range, int rows, int i, int vectors) {
    if (!range.p) return;
    const LineSpan span = prefetch_share(range.bytes, rows, i);
    next = static_cast<const char*>(range.p) + span.first * 64;
    left = span.last - span.first;
    per = (left + vectors - 1) / vectors;
  }
  RA_INLINE void step() {
    for (long k = 0; k < per && left > 0; ++k, --left, next += 64)
      __builtin_prefetch(next, 0, 2);  // to L2 (prefetcht1 on x86)
  }
  RA_INLINE void rest() {
    for (; left > 0; --left, next += 64) __builtin_prefetch(next, 0, 2);
  }
};

// kBf16Out: scores are s · score_scale (> 0, so the tile's max is the raw
// max times it), probabilities rounded and written to t.p_bf16.
// kCvt (W = 16, AVX512_BF16): rounds and stores them by vcvtneps2bf16, the
// same bits in fewer instructions.
template <int W, bool kRoundBf16, bool kBf16Out = false, bool kCvt = false>
RA_INLINE void softmax_tile_impl(const SoftmaxTile& t) {
  static_assert(kRoundBf16 || !kBf16Out, "bf16 output is rounded");
  static_assert(!kCvt || (kBf16Out && W == 16), "vcvtneps2bf16 writes bf16 output, 16 lanes");
  using VF = typename Vec<W>::f;
  const float ninf = -__builtin_inff();
  const VF vscale = splat<VF>(t.score_scale);
  // Rows go in chunks: first every row's max, then the rest row by row. A
  // row's max is a chain of vmaxps and shuffles that its exponentials wait
  // for; computed ahead, the chunk's maxima overlap one another.
  constexpr int kChunk = 16;
  float raw_max[kChunk];
  for (int i0 = 0; i0 < t.rows; i0 += kChunk) {
    const int i1 = t.rows - i0 < kChunk ? t.rows : i0 + kChunk;
    for (int i = i0; i < i1; ++i)
      raw_max[i - i0] = row_max<W>(t.s + static_cast<long>(i) * t.bk, t.bk);
    for (int i = i0; i < i1; ++i) {
      float* s = t.s + static_cast<long>(i) * t.bk;
      std::uint16_t* pb = kBf16Out ? t.p_bf16 + static_cast<long>(i) * t.bk : nullptr;
      const float tile_max = kBf16Out ? raw_max[i - i0] * t.score_scale : raw_max[i - i0];
      const float m_old = t.m2[i];
      const float m_new = tile_max > m_old ? tile_max : m_old;
      RowPrefetch pf0(t.prefetch[0], t.rows, i, t.bk / W), pf1(t.prefetch[1], t.rows, i, t.bk / W);
      if (m_new == ninf) {  // nothing visible yet: probabilities 0, state untouched
        pf0.rest();
        pf1.rest();
        for (int j = 0; j < t.bk; j += W) {
          if constexpr (kBf16Out)
            store_bf16v<W>(pb + j, splat<VF>(0.0f));
          else
            storev(s + j, splat<VF>(0.0f));
        }
        continue;
      }
      const VF vm = splat<VF>(m_new);
      VF vsum = splat<VF>(0.0f);
      for (int j = 0; j < t.bk; j += W) {
        pf0.step();
        pf1.step();
        if constexpr (kBf16Out) {
          // s · scale - m fused: it may round a hair above 0, which exp2v takes.
          const VF e = exp2v<W, true, true>(loadv<VF>(s + j) * vscale - vm);
          VF p;
#if defined(__x86_64__)
          if constexpr (kCvt) {
            round_store_bf16_avx512(e, pb + j, p);
          } else
#endif
          {
            p = round_bf16v<W>(e);
            store_bf16v<W>(pb + j, p);
          }
          vsum += p;
        } else {
          VF p = exp2v<W, true>(loadv<VF>(s + j) - vm);
          if constexpr (kRoundBf16) p = round_bf16v<W>(p);
          vsum += p;
          storev(s + j, p);
        }
      }
      float* l = t.l_lanes + static_cast<long>(i) * kLanes;
      VF lv = loadv<VF>(l);
      VF lc = t.l_comp ? loadv<VF>(t.l_comp + static_cast<long>(i) * kLanes) : splat<VF>(0.0f);
      const bool grew = m_new > m_old;
      // alpha = 2^(m_old - m_new); 0 when m_old = -inf (acc and l are 0 then).
      const VF valpha = grew ? exp2v<W>(splat<VF>(m_old - m_new)) : splat<VF>(1.0f);
      if (grew) {
        lv *= valpha;
        lc *= valpha;
      }
      if (t.l_comp) {
        const VF y = vsum - lc;
        const VF sum = lv + y;
        lc = (sum - lv) - y;
        lv = sum;
        storev(t.l_comp + static_cast<long>(i) * kLanes, lc);
      } else {
        lv += vsum;
      }
      storev(l, lv);
      if (grew) {
        const float alpha = valpha[0];
        for (float* rows : {t.acc_partial, t.acc, t.acc_comp}) {
          if (!rows) continue;
          float* a = rows + static_cast<long>(i) * t.head_dim;
          for (int d = 0; d < t.head_dim; ++d) a[d] *= alpha;
        }
        t.m2[i] = m_new;
      }
    }
  }
}

// Plain loops: the wrappers' target attribute lets the compiler vectorise
// them at that width; there is no reduction, so no -ffast-math is needed
// (and none may be used: it would delete the compensation).
RA_INLINE void compensated_add_impl(float* sum, float* comp, const float* x, std::int64_t n) {
  for (std::int64_t e = 0; e < n; ++e) {
    const float y = x[e] - comp[e];
    const float t = sum[e] + y;
    comp[e] = (t - sum[e]) - y;
    sum[e] = t;
  }
}

template <int W>
RA_INLINE void exp2_array_impl(const float* x, float* out, int n) {
  using VF = typename Vec<W>::f;
  for (int i = 0; i < n; i += W) storev(out + i, exp2v<W>(loadv<VF>(x + i)));
}

template <int W>
RA_INLINE void gradient_tile_impl(const GradientTile& t) {
  using VF = typename Vec<W>::f;
  const VF scale = splat<VF>(t.scale);
  for (int r = 0; r < t.rows; ++r) {
    float* s = t.s + static_cast<std::int64_t>(r) * t.cols;
    float* dp = t.dp + static_cast<std::int64_t>(r) * t.cols;
    for (int c = 0; c < t.cols; c += W) {
      const VF p = exp2v<W>(loadv<VF>(s + c) - loadv<VF>(t.lse2 + c));
      storev(s + c, p);
      storev(dp + c, scale * p * (loadv<VF>(dp + c) - loadv<VF>(t.delta + c)));
    }
  }
}

RA_AVX512 void gradient_tile_avx512(const GradientTile& t) {
  gradient_tile_impl<16>(t);
}
__attribute__((target("avx2,fma"))) void gradient_tile_avx2(const GradientTile& t) {
  gradient_tile_impl<8>(t);
}
void gradient_tile_generic(const GradientTile& t) {
  gradient_tile_impl<4>(t);
}

RA_AVX512 void softmax_tile_avx512(const SoftmaxTile& t) {
  t.p_bf16       ? softmax_tile_impl<16, true, true>(t)
  : t.round_bf16 ? softmax_tile_impl<16, true>(t)
                 : softmax_tile_impl<16, false>(t);
}
#if defined(__x86_64__)
// The bf16 dot path's softmax where the CPU has AVX512_BF16.
RA_AVX512_BF16 void softmax_tile_avx512_bf16(const SoftmaxTile& t) {
  softmax_tile_impl<16, true, true, true>(t);
}
#endif
__attribute__((target("avx2,fma"))) void softmax_tile_avx2(const SoftmaxTile& t) {
  t.p_bf16       ? softmax_tile_impl<8, true, true>(t)
  : t.round_bf16 ? softmax_tile_impl<8, true>(t)
                 : softmax_tile_impl<8, false>(t);
}
void softmax_tile_generic(const SoftmaxTile& t) {
  t.p_bf16       ? softmax_tile_impl<4, true, true>(t)
  : t.round_bf16 ? softmax_tile_impl<4, true>(t)
                 : softmax_tile_impl<4, false>(t);
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void compensated_add_avx512(float* sum,
                                                                                 float* comp,
                                                                                 const float* x,
                                                                                 std::int64_t n) {
  compensated_add_impl(sum, comp, x, n);
}
__attribute__((target("avx2"))) void compensated_add_avx2(float* sum, float* comp, const float* x,
                                                          std::int64_t n) {
  compensated_add_impl(sum, comp, x, n);
}
void compensated_add_generic(float* sum, float* comp, const float* x, std::int64_t n) {
  compensated_add_impl(sum, comp, x, n);
}

RA_AVX512 void exp2_avx512(const float* x, float* out, int n) {
  exp2_array_impl<16>(x, out, n);
}
__attribute__((target("avx2,fma"))) void exp2_avx2(const float* x, float* out, int n) {
  exp2_array_impl<8>(x, out, n);
}
void exp2_generic(const float* x, float* out, int n) {
  exp2_array_impl<4>(x, out, n);
}

}  // namespace

VectorIsa resolve_isa(VectorIsa isa) {
  if (isa != VectorIsa::native) return isa;
  static const VectorIsa widest = [] {
    const std::string name = vector_isa();
    return name == "avx512" ? VectorIsa::avx512
           : name == "avx2" ? VectorIsa::avx2
                            : VectorIsa::generic;
  }();
  return widest;
}

bool cpu_runs(VectorIsa isa) {
  const CpuFeatures& c = cpu_features();
  switch (isa) {
    case VectorIsa::avx512:  // what the wrappers' target attributes let the compiler use
      return c.avx512f && c.avx512bw && c.avx512vl && c.avx512dq && c.fma;
    case VectorIsa::avx2:
      return c.avx2 && c.fma;
    case VectorIsa::native:
    case VectorIsa::generic:
      return true;
  }
  return false;
}

namespace {
// The concrete path for isa, refusing one this CPU would fault on.
VectorIsa runnable(VectorIsa isa) {
  const VectorIsa r = resolve_isa(isa);
  RA_CHECK(cpu_runs(r), usage, "this CPU cannot run the ", vector_isa_name(r), " path");
  return r;
}
}  // namespace

LineSpan prefetch_share(std::size_t bytes, int rows, int i) {
  const long lines = static_cast<long>((bytes + 63) / 64);
  return {lines * i / rows, lines * (i + 1) / rows};
}

void softmax_tile(const SoftmaxTile& t, VectorIsa isa) {
  RA_CHECK(!t.p_bf16 || (t.round_bf16 && t.score_scale > 0), internal,
           "bf16 probabilities out need rounding and a positive score scale");
  switch (runnable(isa)) {
    case VectorIsa::avx512:
#if defined(__x86_64__)
      if (t.p_bf16 && cpu_features().avx512_bf16) return softmax_tile_avx512_bf16(t);
#endif
      return softmax_tile_avx512(t);
    case VectorIsa::avx2:
      return softmax_tile_avx2(t);
    default:
      return softmax_tile_generic(t);
  }
}

void gradient_tile(const GradientTile& t, VectorIsa isa) {
  RA_CHECK(t.cols % 16 == 0, internal, "gradient tile of ", t.cols, " columns");
  switch (runnable(isa)) {
    case VectorIsa::avx512:
      return gradient_tile_avx512(t);
    case VectorIsa::avx2:
      return gradient_tile_avx2(t);
    default:
      return gradient_tile_generic(t);
  }
}

void compensated_add(float* sum, float* comp, const float* x, std::int64_t n, VectorIsa isa) {
  switch (runnable(isa)) {
    case VectorIsa::avx512:
      return compensated_add_avx512(sum, comp, x, n);
    case VectorIsa::avx2:
      return compensated_add_avx2(sum, comp, x, n);
    default:
      return compensated_add_generic(sum, comp, x, n);
  }
}

void exp2_array(const float* x, float* out, int n, VectorIsa isa) {
  switch (runnable(isa)) {
    case VectorIsa::avx512:
      return exp2_avx512(x, out, n);
    case VectorIsa::avx2:
      return exp2_avx2(x, out, n);
    default:
      return exp2_generic(x, out, n);
  }
}

void spread_lanes(const float* l, int rows, float* l_lanes) {
  for (int i = 0; i < rows; ++i) {
    float* row = l_lanes + static_cast<long>(i) * kLanes;
    row[0] = l[i];
    for (int j = 1; j < kLanes; ++j) row[j] = 0.0f;
  }
}

void sum_lanes(const float* l_lanes, int rows, float* l) {
  for (int i = 0; i < rows; ++i) {
    const float* row = l_lanes + static_cast<long>(i) * kLanes;
    float s = 0.0f;
    for (int j = 0; j < kLanes; ++j) s += row[j];
    l[i] = s;
  }
}

void mask_tile(float* s, int rows, int bk, const std::int64_t* q_pos, const std::int64_t* k_pos,
               int k_valid, const Visibility& vis) {
  const float ninf = -__builtin_inff();
  for (int i = 0; i < rows; ++i) {
    float* row = s + static_cast<long>(i) * bk;
    for (int j = k_valid; j < bk; ++j) row[j] = ninf;
    if (!vis.all()) {
      const std::int64_t qp = q_pos[i];
      for (int j = 0; j < k_valid; ++j)
        if (!vis.sees(qp, k_pos[j])) row[j] = ninf;
    }
  }
}

}  // namespace ringattn
