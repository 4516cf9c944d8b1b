// libxsmm dispatch for the tile products, AMX tiles for bf16 where the CPU
// has them, with a portable fallback (also the whole path in a build without
// libxsmm: RINGATTN_HAVE_LIBXSMM unset).
#include "kernel/tile_gemm.hpp"

#if RINGATTN_HAVE_LIBXSMM
#include <libxsmm.h>
#endif

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <mutex>

#include "core/amx_tiles.hpp"
#include "core/cpu.hpp"
#include "core/dtype.hpp"
#include "core/error.hpp"

namespace ringattn {
namespace {
#if RINGATTN_HAVE_LIBXSMM
void init_libxsmm() {
  static std::once_flag once;
  std::call_once(once, [] { libxsmm_init(); });
}
#endif
}  // namespace

TileGemm::TileGemm(int m, int n, int k, int lda, int ldb, int ldc, bool accumulate)
    : m_(m), n_(n), k_(k), lda_(lda), ldb_(ldb), ldc_(ldc), accumulate_(accumulate) {
#if RINGATTN_HAVE_LIBXSMM
  init_libxsmm();
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  const int flags = accumulate ? 0 : LIBXSMM_GEMM_FLAG_BETA_0;
  const libxsmm_blasint lm = m, ln = n, lk = k, la = lda, lb = ldb, lc = ldc;
  libxsmm_smmfunction f =
      libxsmm_smmdispatch(lm, ln, lk, &la, &lb, &lc, &alpha, &beta, &flags, nullptr);
  fn_ = reinterpret_cast<void (*)(const float*, const float*, float*)>(f);
#endif
}

void TileGemm::operator()(const float* a, const float* b, float* c) const {
  if (fn_) {
    fn_(a, b, c);
    return;
  }
  for (int j = 0; j < n_; ++j) {
    float* cj = c + static_cast<long>(j) * ldc_;
    if (!accumulate_)
      for (int i = 0; i < m_; ++i) cj[i] = 0.0f;
    for (int p = 0; p < k_; ++p) {
      const float bpj = b[static_cast<long>(j) * ldb_ + p];
      const float* ap = a + static_cast<long>(p) * lda_;
      for (int i = 0; i < m_; ++i) cj[i] += ap[i] * bpj;
    }
  }
}

#if defined(__x86_64__)
namespace {

// C^T (n x m, row stride ldc) (+)= B^T (n x k, row stride ldb) · A^T with A
// in its VNNI layout, in blocks of 32 x 32: tiles 0-3 hold C, 4-5 B^T's
// rows, 6-7 the VNNI A's columns. m, n, k are multiples of 32. The
// configuration is loaded on every call (it is per thread, and cheap next
// to the 2·32·32·k flops of each block).
__attribute__((target("amx-tile,amx-bf16"))) void amx_gemm(int m, int n, int k, int ldb, int ldc,
                                                           bool accumulate, const std::uint16_t* a,
                                                           const std::uint16_t* b, float* c) {
  static const AmxTileConfig cfg;
  _tile_loadconfig(&cfg);
  const long sb = 2L * ldb, sa = 4L * m, sc = 4L * ldc;  // row strides in bytes
  for (int j0 = 0; j0 < n; j0 += 32)
    for (int i0 = 0; i0 < m; i0 += 32) {
      float* c0 = c + static_cast<long>(j0) * ldc + i0;
      float* c1 = c0 + 16L * ldc;
      if (accumulate) {
        _tile_loadd(0, c0, sc);
        _tile_loadd(1, c0 + 16, sc);
        _tile_loadd(2, c1, sc);
        _tile_loadd(3, c1 + 16, sc);
      } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
      }
      for (int p0 = 0; p0 < k; p0 += 32) {
        _tile_loadd(4, b + static_cast<long>(j0) * ldb + p0, sb);
        _tile_loadd(5, b + static_cast<long>(j0 + 16) * ldb + p0, sb);
        const std::uint16_t* ap = a + static_cast<long>(p0 / 2) * m * 2 + i0 * 2;
        _tile_loadd(6, ap, sa);
        _tile_loadd(7, ap + 32, sa);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      _tile_stored(0, c0, sc);
      _tile_stored(1, c0 + 16, sc);
      _tile_stored(2, c1, sc);
      _tile_stored(3, c1 + 16, sc);
    }
}

}  // namespace
#endif

const char* bf16_gemm_name(Bf16Gemm g) {
  switch (g) {
    case Bf16Gemm::amx:
      return "amx";
    case Bf16Gemm::libxsmm:
      return "libxsmm";
    case Bf16Gemm::portable:
      return "portable";
  }
  return "?";
}

TileGemmBf16::TileGemmBf16(int m, int n, int k, int ldb, int ldc, bool accumulate, Bf16Gemm want)
    : m_(m), n_(n), k_(k), ldb_(ldb), ldc_(ldc), accumulate_(accumulate) {
  RA_CHECK(k % 2 == 0, internal, "bf16 tile product over an odd k = ", k);
  if (want == Bf16Gemm::portable) return;
#if defined(__x86_64__)
  if (want == Bf16Gemm::amx && cpu_features().amx_bf16 && m % 32 == 0 && n % 32 == 0 &&
      k % 32 == 0) {
    runs_ = Bf16Gemm::amx;
    return;
  }
#endif
#if RINGATTN_HAVE_LIBXSMM
  init_libxsmm();
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  const int flags = LIBXSMM_GEMM_FLAG_VNNI_A | (accumulate ? 0 : LIBXSMM_GEMM_FLAG_BETA_0);
  const libxsmm_blasint lm = m, ln = n, lk = k, la = m, lb = ldb, lc = ldc;
  // libxsmm 1.17 names bf16-in, fp32-out "bsmm" (its header's comments are
  // one entry off).
  libxsmm_bsmmfunction f =
      libxsmm_bsmmdispatch(lm, ln, lk, &la, &lb, &lc, &alpha, &beta, &flags, nullptr);
  fn_ = reinterpret_cast<void (*)(const std::uint16_t*, const std::uint16_t*, float*)>(f);
  if (fn_) runs_ = Bf16Gemm::libxsmm;
#endif
}

void TileGemmBf16::operator()(const std::uint16_t* a, const std::uint16_t* b, float* c) const {
#if defined(__x86_64__)
  if (runs_ == Bf16Gemm::amx) {
    amx_gemm(m_, n_, k_, ldb_, ldc_, accumulate_, a, b, c);
    return;
  }
#endif
  if (fn_) {
    fn_(a, b, c);
    return;
  }
  for (int j = 0; j < n_; ++j) {
    float* cj = c + static_cast<long>(j) * ldc_;
    if (!accumulate_)
      for (int i = 0; i < m_; ++i) cj[i] = 0.0f;
    for (int p = 0; p < k_; ++p) {
      const float bpj = bf16_to_float(b[static_cast<long>(j) * ldb_ + p]);
      const std::uint16_t* ap = a + static_cast<long>(p / 2) * m_ * 2 + p % 2;
      for (int i = 0; i < m_; ++i) cj[i] += bf16_to_float(ap[2 * i]) * bpj;
    }
  }
}

const char* tile_gemm_target() {
#if RINGATTN_HAVE_LIBXSMM
  init_libxsmm();
  return libxsmm_get_target_arch();
#else
  return "none (built without libxsmm: portable loops)";
#endif
}

}  // namespace ringattn
