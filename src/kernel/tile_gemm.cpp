// libxsmm dispatch for the tile products, with a portable fallback (also
// the whole path in a build without libxsmm: RINGATTN_HAVE_LIBXSMM unset).
#include "kernel/tile_gemm.hpp"

#if RINGATTN_HAVE_LIBXSMM
#include <libxsmm.h>
#endif

#include <mutex>

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

TileGemmBf16::TileGemmBf16(int m, int n, int k, int ldb, int ldc, bool accumulate, bool allow_jit)
    : m_(m), n_(n), k_(k), ldb_(ldb), ldc_(ldc), accumulate_(accumulate) {
  RA_CHECK(k % 2 == 0, internal, "bf16 tile product over an odd k = ", k);
  if (!allow_jit) return;
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
#endif
}

void TileGemmBf16::operator()(const std::uint16_t* a, const std::uint16_t* b, float* c) const {
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
