// The streaming decode kernel (decode.hpp): DESIGN.md's update_state, finalize
// and merge for a few query rows against a long K/V block, reading K and V
// once in their storage type.
//
//   for each (batch b, kv head hk, key chunk c), in parallel:
//     state_c = (m = -inf, l = 0, acc = 0) for the group's rows
//     skip the chunk if its key positions are invisible to every query
//     for each tile of kTileKeys keys in the chunk (invisible tiles skipped):
//       K, V rows read in place, widened to f32 in registers (the next
//       tile's rows prefetched meanwhile); the portable path, and head dims
//       not a multiple of 8, convert the tile to f32 in cache first
//       S = Q · K^T          (R, kTileKeys)   every row of the group at once
//       mask S where the visibility rule hides a pair
//       update_state: m grows, l and acc rescale by exp2(m_old - m_new)
//       acc = alpha · acc + P · V             (R, D), Kahan-compensated
//   for each (b, hk) row: merge the chunks' states pairwise in a fixed tree,
//   finalize o = acc / l, lse = m + log(l)
//
// The chunks are a function of p alone (never of p.threads), each chunk is
// computed by one thread in a fixed order, and the merge tree is fixed, so
// the bits of o and lse do not depend on the thread count or the schedule.
//
// Accuracy: P·V is summed plainly over one tile (64 keys, in registers) and
// each tile's sum is added to the chunk's acc with Kahan compensation, l
// likewise; chunks merge pairwise (log2 of their count roundings deep). On
// low-entropy blocks (a few distinct key rows repeated 2^20 times), where
// fp32 rounding does not cancel, the error stays ~1e-6 of max|o|.
//
// The vector steps exist twice: AVX2 + FMA + F16C intrinsics in functions
// with target attributes (the project builds without -march), chosen at run
// time, and portable loops for any other CPU or p.cpu.isa = generic.
//
//   core/cpu.hpp           cpu_features: whether the AVX2 path may run
//   core/dtype.hpp         load_f32: the portable conversion of q, k, v rows
//   kernel/attention.hpp   attention_forward, run for compute = bf16
//   kernel/tile_classify.hpp  classify_tile: chunks and tiles no query sees
#include "kernel/decode.hpp"
#include "kernel/workspace.hpp"

#include <omp.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RA_DECODE_X86 1
#else
#define RA_DECODE_X86 0
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>

#include "core/aligned_buffer.hpp"
#include "core/checked.hpp"
#include "core/cpu.hpp"
#include "core/dtype.hpp"
#include "kernel/attention.hpp"
#include "kernel/tile_classify.hpp"

namespace ringattn {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr double kLn2 = 0.6931471805599453;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The kernel's sizes, one compile-time place.
struct DecodeTraits {
  static constexpr int kTileKeys = 64;  // keys per score tile: S is (R, kTileKeys)
  static constexpr int kVec = 8;        // floats per AVX2 vector; D is padded to whole ones
  // AVX2 register blocks, measured on Zen 3 (D = 128, f16, 4 and 64 rows per
  // kv head; S also tried 2x4, 4x3, 3x4, P·V 2x4, 4x3, 3x4, 2x6): S in 4 rows
  // x 2 keys (8 accumulators, q held in registers), P·V in 4 rows x 2
  // vectors of D (8 accumulators). 128-key tiles measured the same as 64.
  static constexpr int kScoreRows = 4, kScoreKeys = 2;
  static constexpr int kAccRows = 4, kAccVecs = 2;
  // Keys per chunk: at least kMinChunkKeys, more when a block would have more
  // than kMaxChunks chunks per (batch, kv head), or more chunk rows (chunks ·
  // group rows) than kMaxChunkRows: that bounds the chunk states' memory.
  static constexpr std::int64_t kMinChunkKeys = 2048;
  static constexpr std::int64_t kMaxChunks = 256;
  static constexpr std::int64_t kMaxChunkRows = 16384;
  static constexpr std::int64_t kMaxGroupRows = 64;  // decode_suits: rows per kv head group
  // Work (tile keys · Dp · (R + 16), a mix of FMAs and bytes) between two
  // progress calls: ~0.1-0.3 ms on Zen 3.
  static constexpr std::int64_t kPollWork = std::int64_t{1} << 22;

  static_assert(kMinChunkKeys % kTileKeys == 0, "a chunk is whole tiles");
  static_assert(kTileKeys % kVec == 0, "softmax pads score rows to whole vectors");
  static_assert(kMaxChunks * kMaxGroupRows <= kMaxChunkRows, "suited groups get every chunk");
  // A K and a V tile at D = 256 and the scores of a suited group stay within
  // Zen 3's 512 KiB L2.
  static_assert((2 * kTileKeys * 256 + kMaxGroupRows * kTileKeys) * 4 <= 512 * 1024,
                "tiles exceed the L2 budget");
};
constexpr int TK = DecodeTraits::kTileKeys;

std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return (a + b - 1) / b;
}

// Whether p's code path reads f16 and bf16 rows in place (defined with the paths).
bool reads_storage(const AttnParams& p);

// The sizes one call works with, decided once from p; the kernel and its
// workspace estimate both read them.
struct Geometry {
  std::int64_t group = 0;  // query heads per kv head
  std::int64_t R = 0;      // rows per group, n_q · group: row r is (head g = r / n_q, i = r % n_q)
  int D = 0, Dp = 0;       // head dim, and padded to whole vectors
  std::int64_t chunk = 0;  // keys per chunk (the last may be shorter)
  std::int64_t NC = 0;     // chunks per (batch, kv head)
  std::int64_t BH = 0;     // batch · heads_kv
  bool masked = false;     // the visibility rule may hide pairs: positions needed
  bool direct = false;     // K and V read in place (rows of whole vectors), not converted first
  std::int64_t segments = 0;  // k_pos segments indexed for the key-position walk
};

Geometry geometry(const AttnParams& p) {
  using T = DecodeTraits;
  Geometry g;
  g.group = p.heads_q / p.heads_kv;
  g.R = p.n_q * g.group;
  g.D = static_cast<int>(p.head_dim);
  g.Dp = (g.D + T::kVec - 1) / T::kVec * T::kVec;
  const std::int64_t max_chunks =
      std::clamp<std::int64_t>(T::kMaxChunkRows / std::max<std::int64_t>(g.R, 1), 1, T::kMaxChunks);
  g.chunk = std::max(T::kMinChunkKeys, ceil_div(ceil_div(p.n_kv, max_chunks), TK) * TK);
  g.NC = ceil_div(p.n_kv, g.chunk);
  g.BH = p.batch * p.heads_kv;
  g.masked = !p.visibility().all();
  g.direct = g.D == g.Dp && (p.dtype == DType::f32 || reads_storage(p));
  g.segments = g.masked ? static_cast<std::int64_t>(p.k_pos.segments().size()) : 0;
  return g;
}

thread_local std::size_t t_last_workspace_bytes = 0;

// The bytes attention_forward's own state takes (compute = bf16 runs it).
std::size_t forward_state_bytes(const AttnParams& p) {
  return static_cast<std::size_t>(p.batch * p.heads_q * p.n_q * (p.head_dim + 2)) * sizeof(float);
}

// Key positions of rows [begin, begin + n) without walking every segment
// before begin: packed pages give one segment per page, thousands of them.
class KeyPositions {
 public:
  // seg_begin: (segments) room for the first row of each segment, or nullptr
  // when no positions are needed (then fill must not be called).
  KeyPositions(const Positions& pos, std::int64_t* seg_begin) : pos_(pos), seg_begin_(seg_begin) {
    if (!seg_begin_) return;
    std::int64_t row = 0;
    for (std::size_t s = 0; s < pos.segments().size(); ++s) {
      seg_begin_[s] = row;
      row += pos.segments()[s].count;
    }
  }
  void fill(std::int64_t begin, std::int64_t n, std::int64_t* out) const {
    if (pos_.empty()) {
      std::iota(out, out + n, begin);
      return;
    }
    const std::vector<PositionSegment>& segs = pos_.segments();
    std::size_t s =
        static_cast<std::size_t>(std::upper_bound(seg_begin_, seg_begin_ + segs.size(), begin) -
                                 seg_begin_) -
        1;
    std::int64_t t = begin - seg_begin_[s];  // row within segment s
    while (n > 0) {
      const PositionSegment& seg = segs[s];
      const std::int64_t take = std::min(n, seg.count - t);
      for (std::int64_t k = 0; k < take; ++k) *out++ = seg.first + (t + k) * seg.stride;
      n -= take;
      ++s;
      t = 0;
    }
  }

 private:
  const Positions& pos_;
  std::int64_t* seg_begin_;
};

// x, opaque to the optimiser: GCC contracts a·b + c into an FMA even across
// statements (C++ gets -ffp-contract=fast), and a product fused into a Kahan
// step makes the compensation measure a rounding that never happened.
inline float rounded(float x) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+x"(x));
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__("" : "+w"(x));
#else
  volatile float v = x;
  x = v;
#endif
  return x;
}

// sum += x with Kahan compensation comp (sum - comp is the better total).
inline void kahan_add(float& sum, float& comp, float x) {
  const float y = x - comp;
  const float t = sum + y;
  comp = (t - sum) - y;
  sum = t;
}

// A compensated total (sum, comp) times a: folded into sum, then scaled.
inline void kahan_scale(float& sum, float& comp, float a) {
  sum = rounded((sum - comp) * a);
  comp = 0.0f;
}

// ---- the tile steps, one table per code path ---------------------------------

struct TileOps {
  // out (n, Dp) f32 from n rows of type t at src, row_stride elements apart;
  // columns D..Dp zero.
  void (*load_rows)(const void* src, DType t, std::int64_t row_stride, int n, int D, int Dp,
                    float* out);
  // s (R, TK): s[r][j] = q_r · k_j for j < nk. q (R, Dp); k: nk rows of Dp
  // elements of type kt, ldk elements apart (f32 unless reads_storage).
  // k_next (or nullptr): nk_next rows of the next tile, same type and
  // stride, to prefetch while this one computes.
  void (*scores)(const float* q, std::int64_t R, int Dp, const void* k, DType kt, std::int64_t ldk,
                 int nk, float* s, const void* k_next, int nk_next);
  // update_state on one tile, row by row: m2 grows to the tile's max, the
  // scores become p = exp2(s - m2) (0 where hidden, and for a row that saw no
  // key yet), l = alpha · l + sum p (Kahan terms l_comp), alpha (R) the factor
  // acc must take: exp2(m2_old - m2_new), 1 when the max did not grow.
  void (*softmax)(float* s, std::int64_t R, int nk, float* m2, float* l, float* l_comp,
                  float* alpha);
  // acc = alpha · acc + P · V, Kahan-compensated in comp (both (R, Dp)); P the
  // (R, TK) probabilities, V nk rows of type vt, ldv elements apart; v_next
  // as k_next above.
  void (*accumulate)(const float* p, std::int64_t R, const void* v, DType vt, std::int64_t ldv,
                     int nk, int Dp, const float* alpha, float* acc, float* comp,
                     const void* v_next, int nk_next);
  // Whether scores and accumulate read f16 and bf16 rows themselves (else
  // load_rows converts them to f32 first).
  bool reads_storage;
};

// Portable loops (any CPU).
void load_rows_generic(const void* src, DType t, std::int64_t row_stride, int n, int D, int Dp,
                       float* out) {
  const std::size_t es = dtype_size(t);
  for (int j = 0; j < n; ++j) {
    float* o = out + static_cast<std::int64_t>(j) * Dp;
    load_f32(static_cast<const char*>(src) + static_cast<std::size_t>(j * row_stride) * es, t, o,
             static_cast<std::size_t>(D));
    std::fill(o + D, o + Dp, 0.0f);
  }
}

void scores_generic(const float* q, std::int64_t R, int Dp, const void* kv, DType, std::int64_t ldk,
                    int nk, float* s, const void*, int) {
  const auto* k = static_cast<const float*>(kv);  // f32: the portable path converts first
  for (std::int64_t r = 0; r < R; ++r)
    for (int j = 0; j < nk; ++j) {
      const float* qr = q + r * Dp;
      const float* kj = k + j * ldk;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int d = 0; d < Dp; ++d) dot += qr[d] * kj[d];
      s[r * TK + j] = dot;
    }
}

void softmax_generic(float* s, std::int64_t R, int nk, float* m2, float* l, float* l_comp,
                     float* alpha) {
  for (std::int64_t r = 0; r < R; ++r) {
    float* row = s + r * TK;
    float m = m2[r];
    for (int j = 0; j < nk; ++j) m = std::max(m, row[j]);
    if (m == kNegInf) {  // no key seen yet: nothing to add
      std::fill_n(row, nk, 0.0f);
      alpha[r] = 1.0f;
      continue;
    }
    const float a = std::exp2(m2[r] - m);  // 0 for the first keys (m2 = -inf), 1 if m2 stays
    m2[r] = m;
    float sum = 0.0f;
    for (int j = 0; j < nk; ++j) {
      row[j] = std::exp2(row[j] - m);
      sum += row[j];
    }
    if (a != 1.0f) kahan_scale(l[r], l_comp[r], a);
    kahan_add(l[r], l_comp[r], sum);
    alpha[r] = a;
  }
}

void accumulate_generic(const float* p, std::int64_t R, const void* vv, DType, std::int64_t ldv,
                        int nk, int Dp, const float* alpha, float* acc, float* comp, const void*,
                        int) {
  const auto* v = static_cast<const float*>(vv);  // f32: the portable path converts first
  float t[kMaxHeadDim + DecodeTraits::kVec];      // (Dp) this tile's P·V of one row
  for (std::int64_t r = 0; r < R; ++r) {
    std::fill_n(t, Dp, 0.0f);
    for (int j = 0; j < nk; ++j) {
      const float pj = p[r * TK + j];
      const float* vj = v + j * ldv;
#pragma omp simd
      for (int d = 0; d < Dp; ++d) t[d] += pj * vj[d];
    }
    float* ar = acc + r * Dp;
    float* cr = comp + r * Dp;
    const float a = alpha[r];
    if (a != 1.0f)
      for (int d = 0; d < Dp; ++d) kahan_scale(ar[d], cr[d], a);
    for (int d = 0; d < Dp; ++d) kahan_add(ar[d], cr[d], t[d]);
  }
}

constexpr TileOps kGenericOps{load_rows_generic, scores_generic, softmax_generic,
                              accumulate_generic, false};

#if RA_DECODE_X86
// AVX2 + FMA + F16C. Helpers are always_inline with the same target, so they
// compile into the wrappers that the table points to.
#define RA_AVX2 __attribute__((target("avx2,fma,f16c")))
#define RA_AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) inline

RA_AVX2_INLINE float hsum(__m256 x) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

RA_AVX2_INLINE float hmax(__m256 x) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// 2^x for x <= 0 (scores minus their running max; -inf gives 0): the
// softmax_tile polynomial (degree 6 on [-1/2, 1/2], 1e-7 relative error),
// exponent built from bits, exactly 0 below -126.
RA_AVX2_INLINE __m256 exp2_nonpositive(__m256 x) {
  const __m256 xc = _mm256_max_ps(x, _mm256_set1_ps(-127.0f));
  const __m256 r = _mm256_round_ps(xc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(xc, r);
  __m256 p = _mm256_set1_ps(1.5461444683652947e-4f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.3400428178361574e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.6180566785900900e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5503272266688435e-2f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022650922288005e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314720670283330e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
  const __m256i bits =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(r), _mm256_set1_epi32(127)), 23);
  const __m256 out = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
  return _mm256_blendv_ps(out, _mm256_setzero_ps(),
                          _mm256_cmp_ps(x, _mm256_set1_ps(-126.0f), _CMP_LT_OQ));
}

// Elements i .. i + 8 of type S at base, as f32.
template <DType S>
RA_AVX2_INLINE __m256 load8(const void* base, std::int64_t i) {
  if constexpr (S == DType::f32) {
    return _mm256_loadu_ps(static_cast<const float*>(base) + i);
  } else {
    const __m128i h = _mm_loadu_si128(
        reinterpret_cast<const __m128i*>(static_cast<const std::uint16_t*>(base) + i));
    if constexpr (S == DType::f16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));  // bf16
  }
}

// 8 elements of type t at src as f32.
RA_AVX2_INLINE __m256 load8(const void* src, DType t) {
  if (t == DType::f32) return load8<DType::f32>(src, 0);
  return t == DType::f16 ? load8<DType::f16>(src, 0) : load8<DType::bf16>(src, 0);
}

RA_AVX2 void load_rows_avx2(const void* src, DType t, std::int64_t row_stride, int n, int D, int Dp,
                            float* out) {
  const std::size_t es = dtype_size(t);
  const int full = D / DecodeTraits::kVec * DecodeTraits::kVec;
  for (int j = 0; j < n; ++j) {
    const char* s = static_cast<const char*>(src) + static_cast<std::size_t>(j * row_stride) * es;
    float* o = out + static_cast<std::int64_t>(j) * Dp;
    for (int d = 0; d < full; d += DecodeTraits::kVec)
      _mm256_storeu_ps(o + d, load8(s + static_cast<std::size_t>(d) * es, t));
    if (full < D) {  // the last partial vector, zero-padded to Dp
      alignas(32) unsigned char tail[DecodeTraits::kVec * sizeof(float)] = {};
      std::memcpy(tail, s + static_cast<std::size_t>(full) * es,
                  static_cast<std::size_t>(D - full) * es);
      _mm256_storeu_ps(o + full, load8(tail, t));
    }
  }
}

// s[r][j] = q_r · k_j for NR rows and NK keys: NR · NK vector accumulators
// along D, reduced at the end. k: rows of type S, ldk elements apart.
template <DType S, int NR, int NK>
RA_AVX2_INLINE void scores_block(const float* q, int Dp, const void* k, std::int64_t ldk,
                                 float* s) {
  __m256 a[NR][NK];
  for (int r = 0; r < NR; ++r)
    for (int j = 0; j < NK; ++j) a[r][j] = _mm256_setzero_ps();
  for (int d = 0; d < Dp; d += DecodeTraits::kVec) {
    __m256 kv[NK];
    for (int j = 0; j < NK; ++j) kv[j] = load8<S>(k, j * ldk + d);
    for (int r = 0; r < NR; ++r) {
      __m256 qv = _mm256_loadu_ps(q + static_cast<std::int64_t>(r) * Dp + d);
      // In a register: GCC would fold the load into each FMA, loading it NK
      // times, and the loads, not the FMAs, would bound the loop.
      if constexpr (NK > 1) __asm__("" : "+x"(qv));
      for (int j = 0; j < NK; ++j) a[r][j] = _mm256_fmadd_ps(qv, kv[j], a[r][j]);
    }
  }
  if constexpr (NK == 2 && NR % 2 == 0) {
    // Rows r, r + 1 at once: lanes (r k0, r k1, r+1 k0, r+1 k1) summed by hadds.
    for (int r = 0; r < NR; r += 2) {
      const __m256 u = _mm256_hadd_ps(_mm256_hadd_ps(a[r][0], a[r][1]),
                                      _mm256_hadd_ps(a[r + 1][0], a[r + 1][1]));
      const __m128 x = _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1));
      _mm_storel_pi(reinterpret_cast<__m64*>(s + r * TK), x);
      _mm_storeh_pi(reinterpret_cast<__m64*>(s + (r + 1) * TK), x);
    }
  } else {
    for (int r = 0; r < NR; ++r) {
      if constexpr (NK == 4) {
        const __m256 u =
            _mm256_hadd_ps(_mm256_hadd_ps(a[r][0], a[r][1]), _mm256_hadd_ps(a[r][2], a[r][3]));
        _mm_storeu_ps(s + r * TK,
                      _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1)));
      } else {
        for (int j = 0; j < NK; ++j) s[r * TK + j] = hsum(a[r][j]);
      }
    }
  }
}

// Asks for rows [j0, j1) of the next tile (type S, ld elements apart, Dp
// wide) to be brought into cache while this tile computes.
template <DType S>
RA_AVX2_INLINE void prefetch_rows(const void* next, std::int64_t ld, int j0, int j1, int Dp) {
  if (!next) return;
  const std::size_t es = dtype_size(S), row_bytes = static_cast<std::size_t>(Dp) * es;
  for (int j = j0; j < j1; ++j) {
    const char* row = static_cast<const char*>(next) + static_cast<std::size_t>(j * ld) * es;
    for (std::size_t b = 0; b < row_bytes; b += 64) _mm_prefetch(row + b, _MM_HINT_T0);
    _mm_prefetch(row + row_bytes - 1, _MM_HINT_T0);  // the line a misaligned row ends in
  }
}

// Blocks of SR rows by SK keys, then the rows and keys left over.
template <DType S>
RA_AVX2_INLINE void scores_typed(const float* q, std::int64_t R, int Dp, const void* k,
                                 std::int64_t ldk, int nk, float* s, const void* k_next,
                                 int nk_next) {
  constexpr int SR = DecodeTraits::kScoreRows, SK = DecodeTraits::kScoreKeys;
  const std::size_t es = dtype_size(S);
  auto key = [&](int j) {
    return static_cast<const char*>(k) + static_cast<std::size_t>(j * ldk) * es;
  };
  int j = 0;
  for (; j + SK <= nk; j += SK) {
    prefetch_rows<S>(k_next, ldk, j, std::min(j + SK, nk_next), Dp);
    std::int64_t r = 0;
    for (; r + SR <= R; r += SR)
      scores_block<S, SR, SK>(q + r * Dp, Dp, key(j), ldk, s + r * TK + j);
    for (; r < R; ++r) scores_block<S, 1, SK>(q + r * Dp, Dp, key(j), ldk, s + r * TK + j);
  }
  for (; j < nk; ++j) {
    std::int64_t r = 0;
    for (; r + SR <= R; r += SR)
      scores_block<S, SR, 1>(q + r * Dp, Dp, key(j), ldk, s + r * TK + j);
    for (; r < R; ++r) scores_block<S, 1, 1>(q + r * Dp, Dp, key(j), ldk, s + r * TK + j);
  }
}

RA_AVX2 void scores_avx2(const float* q, std::int64_t R, int Dp, const void* k, DType kt,
                         std::int64_t ldk, int nk, float* s, const void* k_next, int nk_next) {
  switch (kt) {
    case DType::f32:
      scores_typed<DType::f32>(q, R, Dp, k, ldk, nk, s, k_next, nk_next);
      break;
    case DType::f16:
      scores_typed<DType::f16>(q, R, Dp, k, ldk, nk, s, k_next, nk_next);
      break;
    case DType::bf16:
      scores_typed<DType::bf16>(q, R, Dp, k, ldk, nk, s, k_next, nk_next);
      break;
  }
}

RA_AVX2 void softmax_avx2(float* s, std::int64_t R, int nk, float* m2, float* l, float* l_comp,
                          float* alpha) {
  constexpr int V = DecodeTraits::kVec;
  const int nv = (nk + V - 1) / V * V;  // whole vectors; the padding is hidden (-inf)
  for (std::int64_t r = 0; r < R; ++r) {
    float* row = s + r * TK;
    std::fill(row + nk, row + nv, kNegInf);
    __m256 mv = _mm256_set1_ps(m2[r]);
    for (int j = 0; j < nv; j += V) mv = _mm256_max_ps(mv, _mm256_loadu_ps(row + j));
    const float m = hmax(mv);
    if (m == kNegInf) {  // no key seen yet: nothing to add
      std::fill_n(row, nv, 0.0f);
      alpha[r] = 1.0f;
      continue;
    }
    const float a = std::exp2(m2[r] - m);  // 0 for the first keys (m2 = -inf), 1 if m2 stays
    m2[r] = m;
    const __m256 mb = _mm256_set1_ps(m);
    __m256 sum = _mm256_setzero_ps();
    for (int j = 0; j < nv; j += V) {
      __m256 pj = exp2_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(row + j), mb));
      __asm__("" : "+x"(pj));  // l adds the p that P·V uses, not an FMA-fused one
      _mm256_storeu_ps(row + j, pj);
      sum = _mm256_add_ps(sum, pj);
    }
    if (a != 1.0f) kahan_scale(l[r], l_comp[r], a);
    kahan_add(l[r], l_comp[r], hsum(sum));
    alpha[r] = a;
  }
}

// acc = alpha · acc + P · V for NR rows and NV vectors of D: the tile's P·V
// in NR · NV registers, then one compensated add per element. v: rows of
// type S, ldv elements apart, from column c0.
template <DType S, int NR, int NV>
RA_AVX2_INLINE void accumulate_block(const float* p, const void* v, std::int64_t ldv,
                                     std::int64_t c0, int nk, int Dp, const float* alpha,
                                     float* acc, float* comp) {
  constexpr int V = DecodeTraits::kVec;
  __m256 t[NR][NV];
  for (int r = 0; r < NR; ++r)
    for (int u = 0; u < NV; ++u) t[r][u] = _mm256_setzero_ps();
  for (int j = 0; j < nk; ++j) {
    __m256 vv[NV];
    for (int u = 0; u < NV; ++u) vv[u] = load8<S>(v, j * ldv + c0 + u * V);
    for (int r = 0; r < NR; ++r) {
      const __m256 pb = _mm256_broadcast_ss(p + r * TK + j);
      for (int u = 0; u < NV; ++u) t[r][u] = _mm256_fmadd_ps(pb, vv[u], t[r][u]);
    }
  }
  for (int r = 0; r < NR; ++r) {
    const bool rescale = alpha[r] != 1.0f;  // the max grew: fold comp into acc, then scale
    const __m256 a = _mm256_set1_ps(alpha[r]);
    for (int u = 0; u < NV; ++u) {
      float* ap = acc + static_cast<std::int64_t>(r) * Dp + c0 + u * V;
      float* cp = comp + static_cast<std::int64_t>(r) * Dp + c0 + u * V;
      __m256 sum = _mm256_loadu_ps(ap);
      __m256 c = _mm256_loadu_ps(cp);
      if (rescale) {
        sum = _mm256_mul_ps(_mm256_sub_ps(sum, c), a);
        __asm__("" : "+x"(sum));  // no FMA across the Kahan step (see rounded())
        c = _mm256_setzero_ps();
      }
      const __m256 y = _mm256_sub_ps(t[r][u], c);
      const __m256 next = _mm256_add_ps(sum, y);
      _mm256_storeu_ps(cp, _mm256_sub_ps(_mm256_sub_ps(next, sum), y));
      _mm256_storeu_ps(ap, next);
    }
  }
}

template <DType S, int NR>
RA_AVX2_INLINE void accumulate_rows(const float* p, const void* v, std::int64_t ldv, int nk, int Dp,
                                    const float* alpha, float* acc, float* comp, const void* v_next,
                                    int nk_next) {
  constexpr int V = DecodeTraits::kVec, AV = DecodeTraits::kAccVecs;
  const int nvec = Dp / V;
  const int strips = (nvec + AV - 1) / AV, per = (nk_next + strips - 1) / std::max(strips, 1);
  int u = 0;
  for (; u + AV <= nvec; u += AV) {
    prefetch_rows<S>(v_next, ldv, u / AV * per, std::min((u / AV + 1) * per, nk_next), Dp);
    accumulate_block<S, NR, AV>(p, v, ldv, u * V, nk, Dp, alpha, acc, comp);
  }
  for (; u < nvec; ++u) accumulate_block<S, NR, 1>(p, v, ldv, u * V, nk, Dp, alpha, acc, comp);
}

template <DType S>
RA_AVX2_INLINE void accumulate_typed(const float* p, std::int64_t R, const void* v,
                                     std::int64_t ldv, int nk, int Dp, const float* alpha,
                                     float* acc, float* comp, const void* v_next, int nk_next) {
  constexpr int AR = DecodeTraits::kAccRows;
  std::int64_t r = 0;
  for (; r + AR <= R; r += AR)  // the first row block asks for the next tile
    accumulate_rows<S, AR>(p + r * TK, v, ldv, nk, Dp, alpha + r, acc + r * Dp, comp + r * Dp,
                           r == 0 ? v_next : nullptr, nk_next);
  for (; r < R; ++r)
    accumulate_rows<S, 1>(p + r * TK, v, ldv, nk, Dp, alpha + r, acc + r * Dp, comp + r * Dp,
                          r == 0 ? v_next : nullptr, nk_next);
}

RA_AVX2 void accumulate_avx2(const float* p, std::int64_t R, const void* v, DType vt,
                             std::int64_t ldv, int nk, int Dp, const float* alpha, float* acc,
                             float* comp, const void* v_next, int nk_next) {
  switch (vt) {
    case DType::f32:
      accumulate_typed<DType::f32>(p, R, v, ldv, nk, Dp, alpha, acc, comp, v_next, nk_next);
      break;
    case DType::f16:
      accumulate_typed<DType::f16>(p, R, v, ldv, nk, Dp, alpha, acc, comp, v_next, nk_next);
      break;
    case DType::bf16:
      accumulate_typed<DType::bf16>(p, R, v, ldv, nk, Dp, alpha, acc, comp, v_next, nk_next);
      break;
  }
}

constexpr TileOps kAvx2Ops{load_rows_avx2, scores_avx2, softmax_avx2, accumulate_avx2, true};
#endif  // RA_DECODE_X86

// The AVX2 path unless p asks for the generic one or the CPU lacks AVX2,
// FMA or F16C.
const TileOps& tile_ops(const AttnParams& p) {
#if RA_DECODE_X86
  const CpuFeatures& f = cpu_features();
  if (p.cpu.isa != VectorIsa::generic && f.avx2 && f.fma && f.f16c) return kAvx2Ops;
#endif
  (void)p;
  return kGenericOps;
}

bool reads_storage(const AttnParams& p) {
  return tile_ops(p).reads_storage;
}

// ---- chunks, merge, finalize -------------------------------------------------

// What every chunk reads, set up once per call.
struct Setup {
  const AttnParams& p;
  const Geometry& g;
  const TileOps& ops;
  Visibility vis;
  const float* q;             // (BH, R, Dp) scaled by scale · log2 e, zero-padded
  const std::int64_t* qpos;   // (n_q) or nullptr when unmasked
  std::int64_t q_min, q_max;  // their range
  const KeyPositions* kpos;   // nullptr when unmasked
  // The chunks' states, base 2: m2 and l (BH, NC, R), acc (BH, NC, R, Dp).
  float* m2;
  float* l;
  float* acc;
};

// One thread's scratch.
struct Scratch {
  AlignedBuffer<float> k, v;          // (TK, Dp) converted tiles, unless read in place
  AlignedBuffer<float> s;             // (R, TK) scores, then probabilities
  AlignedBuffer<float> alpha;         // (R) the tile's rescale factors
  AlignedBuffer<float> l_comp;        // (R) Kahan terms of the chunk's l
  AlignedBuffer<float> comp;          // (R, Dp) Kahan terms of the chunk's acc
  AlignedBuffer<std::int64_t> kpos;   // (chunk) the chunk's key positions
  AlignedBuffer<unsigned char> seen;  // (n_q, TK) visibility of a masked tile

  Scratch(Workspace& ws, const AttnParams& p, const Geometry& g) {
    const auto tile = static_cast<std::size_t>(TK * g.Dp);
    const auto R = static_cast<std::size_t>(g.R);
    k = ws.buffer<float>(g.direct ? 0 : tile);
    v = ws.buffer<float>(g.direct ? 0 : tile);
    s = ws.buffer<float>(R * TK);
    alpha = ws.buffer<float>(R);
    l_comp = ws.buffer<float>(R);
    comp = ws.buffer<float>(R * static_cast<std::size_t>(g.Dp));
    kpos = ws.buffer<std::int64_t>(g.masked ? static_cast<std::size_t>(g.chunk) : 0);
    seen = ws.buffer<unsigned char>(g.masked ? static_cast<std::size_t>(p.n_q * TK) : 0);
  }
};

// Whether any query sees any of the n keys at kpos, by their range.
TileKind classify_keys(const Setup& pr, const std::int64_t* kpos, std::int64_t n) {
  const auto [lo, hi] = std::minmax_element(kpos, kpos + n);
  return classify_tile(pr.q_min, pr.q_max, *lo, *hi, pr.vis);
}

// A tile's K or V rows where the kernels read them: data's type and row stride.
struct TileRows {
  const void* data;
  DType type;
  std::int64_t ld;
};

// The state of chunk c of (batch, kv head) bh, from its keys alone. done:
// the call's fraction done when this chunk began, for the progress hook.
void process_chunk(const Setup& pr, std::int64_t bh, std::int64_t c, Scratch& sc,
                   std::int64_t& poll_work, bool poll, double done) {
  const AttnParams& p = pr.p;
  const Geometry& g = pr.g;
  const std::int64_t R = g.R, Dp = g.Dp, n_q = p.n_q;
  const std::int64_t b = bh / p.heads_kv, hk = bh % p.heads_kv;
  const std::int64_t k0 = c * g.chunk, nkc = std::min(g.chunk, p.n_kv - k0);
  const std::int64_t srow = (bh * g.NC + c) * R;
  float* m2 = pr.m2 + srow;
  float* l = pr.l + srow;
  float* acc = pr.acc + srow * Dp;
  std::fill_n(m2, R, kNegInf);
  std::fill_n(l, R, 0.0f);
  std::fill_n(acc, R * Dp, 0.0f);
  if (g.masked) {
    pr.kpos->fill(k0, nkc, sc.kpos.data());
    if (classify_keys(pr, sc.kpos.data(), nkc) == TileKind::empty) return;
  }
  sc.l_comp.fill(0.0f);
  sc.comp.fill(0.0f);

  const std::size_t es = dtype_size(p.dtype);
  const char* kbase = static_cast<const char*>(p.k.data) +
                      static_cast<std::size_t>(b * p.k.batch_stride + hk * p.k.head_stride) * es;
  const char* vbase = static_cast<const char*>(p.v.data) +
                      static_cast<std::size_t>(b * p.v.batch_stride + hk * p.v.head_stride) * es;
  const float* q = pr.q + bh * R * Dp;
  for (std::int64_t t = 0; t < nkc; t += TK) {
    const int nk = static_cast<int>(std::min<std::int64_t>(TK, nkc - t));
    TileKind kind = TileKind::full;
    if (g.masked) {
      const std::int64_t* kp = sc.kpos.data() + t;
      kind = classify_keys(pr, kp, nk);
      if (kind == TileKind::empty) continue;
      if (kind == TileKind::diagonal) {  // the exact mask; a tile nobody sees is not read
        bool any = false;
        for (std::int64_t i = 0; i < n_q; ++i)
          for (int j = 0; j < nk; ++j) {
            const bool sees = pr.vis.sees(pr.qpos[i], kp[j]);
            sc.seen[static_cast<std::size_t>(i * TK + j)] = sees;
            any |= sees;
          }
        if (!any) continue;
      }
    }
    const std::int64_t row0 = k0 + t;
    // The tile's K or V rows as the kernels read them: in place (direct), or
    // widened to f32 into buf.
    auto tile_rows = [&](const char* base, std::int64_t row_stride, float* buf) -> TileRows {
      const char* at = base + static_cast<std::size_t>(row0 * row_stride) * es;
      if (g.direct) return {at, p.dtype, row_stride};
      pr.ops.load_rows(at, p.dtype, row_stride, nk, g.D, g.Dp, buf);
      return {buf, DType::f32, Dp};
    };
    const TileRows kt = tile_rows(kbase, p.k.row_stride, sc.k.data());
    // The next tile's rows, read in place: the kernels ask for them early.
    const int nk_next = static_cast<int>(std::clamp<std::int64_t>(nkc - t - TK, 0, TK));
    const bool ahead = g.direct && nk_next > 0;
    const char* k_next =
        ahead ? kbase + static_cast<std::size_t>((row0 + TK) * p.k.row_stride) * es : nullptr;
    const char* v_next =
        ahead ? vbase + static_cast<std::size_t>((row0 + TK) * p.v.row_stride) * es : nullptr;
    pr.ops.scores(q, R, g.Dp, kt.data, kt.type, kt.ld, nk, sc.s.data(), k_next, nk_next);
    if (kind == TileKind::diagonal)
      for (std::int64_t r = 0; r < R; ++r) {
        const unsigned char* seen = sc.seen.data() + (r % n_q) * TK;
        float* row = sc.s.data() + r * TK;
        for (int j = 0; j < nk; ++j)
          if (!seen[j]) row[j] = kNegInf;
      }
    pr.ops.softmax(sc.s.data(), R, nk, m2, l, sc.l_comp.data(), sc.alpha.data());
    const TileRows vt = tile_rows(vbase, p.v.row_stride, sc.v.data());
    pr.ops.accumulate(sc.s.data(), R, vt.data, vt.type, vt.ld, nk, g.Dp, sc.alpha.data(), acc,
                      sc.comp.data(), v_next, nk_next);
    if (poll && (poll_work += nk * Dp * (R + 16)) >= DecodeTraits::kPollWork) {
      p.progress(p.progress_arg, done);
      poll_work = 0;
    }
  }
  // The compensated totals.
  for (std::int64_t r = 0; r < R; ++r) l[r] -= sc.l_comp[static_cast<std::size_t>(r)];
  for (std::int64_t i = 0; i < R * Dp; ++i) acc[i] -= sc.comp[static_cast<std::size_t>(i)];
}

// State a = merge(a, b), DESIGN.md's merge on unnormalised states (base 2):
// m = max(m_a, m_b), each side weighted by exp2(m_side - m) <= 1, so nothing
// overflows and an empty side (m = -inf) weighs 0.
void merge_states(float& m_a, float& l_a, float* acc_a, float m_b, float l_b, const float* acc_b,
                  int Dp) {
  if (m_b == kNegInf) return;
  if (m_a == kNegInf) {
    m_a = m_b;
    l_a = l_b;
    std::copy_n(acc_b, Dp, acc_a);
    return;
  }
  const double m = std::max(m_a, m_b);
  const auto wa = static_cast<float>(std::exp2(static_cast<double>(m_a) - m));
  const auto wb = static_cast<float>(std::exp2(static_cast<double>(m_b) - m));
  l_a = l_a * wa + l_b * wb;
  for (int d = 0; d < Dp; ++d) acc_a[d] = acc_a[d] * wa + acc_b[d] * wb;
  m_a = static_cast<float>(m);
}

// Row r of group bh: its chunks merged pairwise (chunk c takes c + step for
// step = 1, 2, 4, ...: a fixed tree), then finalize into o and lse.
void merge_and_finalize(const Setup& pr, std::int64_t bh, std::int64_t r, float* o, float* lse) {
  const AttnParams& p = pr.p;
  const Geometry& g = pr.g;
  const std::int64_t R = g.R, NC = g.NC;
  auto at = [&](std::int64_t c) { return (bh * NC + c) * R + r; };
  for (std::int64_t step = 1; step < NC; step *= 2)
    for (std::int64_t c = 0; c + step < NC; c += 2 * step)
      merge_states(pr.m2[at(c)], pr.l[at(c)], pr.acc + at(c) * g.Dp, pr.m2[at(c + step)],
                   pr.l[at(c + step)], pr.acc + at(c + step) * g.Dp, g.Dp);

  const std::int64_t b = bh / p.heads_kv, hk = bh % p.heads_kv;
  const std::int64_t h = hk * g.group + r / p.n_q, i = r % p.n_q;
  const std::int64_t out = (b * p.heads_q + h) * p.n_q + i;
  float* orow = o + out * g.D;
  const float l = pr.l[at(0)];
  const float* arow = pr.acc + at(0) * g.Dp;
  if (l > 0.0f) {
    const float inv = 1.0f / l;
    for (int d = 0; d < g.D; ++d) orow[d] = arow[d] * inv;
    if (lse)
      lse[out] = static_cast<float>(
          (static_cast<double>(pr.m2[at(0)]) + std::log2(static_cast<double>(l))) * kLn2);
  } else {
    std::fill_n(orow, g.D, 0.0f);
    if (lse) lse[out] = kNegInf;
  }
}

}  // namespace

bool decode_suits(const AttnParams& p) {
  if (p.compute != ComputeType::f32 || p.heads_kv < 1 || p.heads_q % p.heads_kv != 0) return false;
  return p.n_q * (p.heads_q / p.heads_kv) <= DecodeTraits::kMaxGroupRows;
}

void decode_attention(const AttnParams& p, float* o, float* lse) {
  p.validate();
  if (p.compute == ComputeType::bf16) {  // the main kernel's bf16 rounding, not repeated here
    attention_forward(p, o, lse);
    t_last_workspace_bytes = last_update_state_workspace_bytes() + forward_state_bytes(p);
    return;
  }
  t_last_workspace_bytes = 0;
  if (p.n_q == 0) return;
  const Geometry g = geometry(p);
  const std::int64_t B = p.batch, HQ = p.heads_q, D = g.D;
  if (p.n_kv == 0) {
    std::fill_n(o, B * HQ * p.n_q * D, 0.0f);
    if (lse) std::fill_n(lse, B * HQ * p.n_q, kNegInf);
    return;
  }
  Workspace ws;
  const std::int64_t R = g.R, Dp = g.Dp, BH = g.BH, NC = g.NC;

  // Q of every group, scaled into base 2 and zero-padded: (BH, R, Dp).
  AlignedBuffer<float> q = ws.buffer<float>(static_cast<std::size_t>(BH * R * Dp));
  const float qscale = p.effective_scale() * kLog2e;
  const std::size_t es = dtype_size(p.dtype);
  for (std::int64_t bh = 0; bh < BH; ++bh)
    for (std::int64_t r = 0; r < R; ++r) {
      const std::int64_t b = bh / p.heads_kv, h = (bh % p.heads_kv) * g.group + r / p.n_q;
      const std::int64_t off =
          b * p.q.batch_stride + h * p.q.head_stride + (r % p.n_q) * p.q.row_stride;
      float* qr = q.data() + (bh * R + r) * Dp;
      load_f32(static_cast<const char*>(p.q.data) + static_cast<std::size_t>(off) * es, p.dtype, qr,
               static_cast<std::size_t>(D));
      for (std::int64_t d = 0; d < D; ++d) qr[d] *= qscale;
      std::fill(qr + D, qr + Dp, 0.0f);
    }

  // Positions, where the visibility rule needs them.
  AlignedBuffer<std::int64_t> qpos =
      ws.buffer<std::int64_t>(g.masked ? static_cast<std::size_t>(p.n_q) : 0);
  AlignedBuffer<std::int64_t> seg_begin =
      ws.buffer<std::int64_t>(static_cast<std::size_t>(g.segments));
  std::int64_t q_min = 0, q_max = 0;
  if (g.masked) {
    if (p.q_pos.empty())
      std::iota(qpos.data(), qpos.data() + p.n_q, std::int64_t{0});
    else
      p.q_pos.fill(0, p.n_q, qpos.data());
    const auto [lo, hi] = std::minmax_element(qpos.data(), qpos.data() + p.n_q);
    q_min = *lo;
    q_max = *hi;
  }
  const KeyPositions kpos(p.k_pos, g.segments > 0 ? seg_begin.data() : nullptr);

  // The chunks' states: m2, l (BH, NC, R); acc (BH, NC, R, Dp).
  const auto states = static_cast<std::size_t>(BH * NC * R);
  AlignedBuffer<float> m2 = ws.buffer<float>(states);
  AlignedBuffer<float> l = ws.buffer<float>(states);
  AlignedBuffer<float> acc = ws.buffer<float>(states * static_cast<std::size_t>(Dp));

  const Setup pr{p,
                 g,
                 tile_ops(p),
                 p.visibility(),
                 q.data(),
                 qpos.data(),
                 q_min,
                 q_max,
                 g.masked ? &kpos : nullptr,
                 m2.data(),
                 l.data(),
                 acc.data()};
  const std::int64_t items = BH * NC, rows = BH * R;
#pragma omp parallel num_threads(p.threads)
  {
    Scratch sc(ws, p, g);
    // Team thread 0 is the calling thread (the one MPI knows).
    const bool poll = p.progress != nullptr && omp_get_thread_num() == 0;
    std::int64_t poll_work = 0;
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t item = 0; item < items; ++item)
      process_chunk(pr, item / NC, item % NC, sc, poll_work, poll,
                    static_cast<double>(item) / static_cast<double>(items));
#pragma omp for schedule(static)
    for (std::int64_t row = 0; row < rows; ++row) merge_and_finalize(pr, row / R, row % R, o, lse);
  }
  t_last_workspace_bytes = ws.bytes();
}

std::size_t last_decode_workspace_bytes() {
  return t_last_workspace_bytes;
}

// The buffers decode_attention makes, written out once more from the
// geometry: the test that compares this with the counted allocations fails
// when one changes without the other.
std::size_t decode_workspace_bytes(const AttnParams& p) {
  if (p.compute == ComputeType::bf16)
    return update_state_workspace_bytes(p) + forward_state_bytes(p);
  if (p.n_q == 0 || p.n_kv == 0) return 0;
  const Geometry g = geometry(p);
  constexpr std::int64_t f = sizeof(float), i = sizeof(std::int64_t);
  const std::int64_t R = g.R, Dp = g.Dp;
  // Checked: memory planning asks about shapes no machine can hold.
  Checked c;
  // Scaled Q (BH, R, Dp); query positions and segment starts when masked.
  const std::int64_t shared =
      c.add({c.mul({g.BH, R, Dp, f}), c.mul({g.masked ? p.n_q : 0, i}), c.mul({g.segments, i})});
  // The chunks' states: m2, l and acc (Dp) per (BH, NC, R) row.
  const std::int64_t states = c.mul({g.BH, g.NC, R, Dp + 2, f});
  // Per thread: K and V tiles unless read in place, scores, alpha, l's and
  // acc's Kahan terms; the chunk's key positions and a tile's mask when masked.
  const std::int64_t per_thread =
      c.add({c.mul({g.direct ? 0 : 2 * TK * Dp, f}), c.mul({R, TK + 2 + Dp, f}),
             g.masked ? c.add({c.mul({g.chunk, i}), c.mul({p.n_q, TK})}) : 0});
  const std::int64_t total = c.add({shared, states, c.mul({std::max(p.threads, 1), per_thread})});
  return c.overflow ? static_cast<std::size_t>(kBytesOverflow) : static_cast<std::size_t>(total);
}

}  // namespace ringattn
