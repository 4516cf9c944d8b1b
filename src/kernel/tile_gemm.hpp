// The tile products of the fused kernel: C (+)= A·B on small fp32 tiles in
// column-major terms, JIT-compiled by libxsmm for this CPU's vector ISA (AVX2,
// AVX-512, ...) when it can, a portable loop otherwise.
//
// Measured on the project machine (Zen 3, AVX2): libxsmm's kernels for the
// attention tile shapes reach ~0.93 of the FMA peak; see bench/ and the
// kernel issue's note.
#pragma once

namespace ringattn {

class TileGemm {
 public:
  // C(m x n, ldc) = A(m x k, lda) · B(k x n, ldb) [+ C when accumulate].
  TileGemm(int m, int n, int k, int lda, int ldb, int ldc, bool accumulate);
  void operator()(const float* a, const float* b, float* c) const;
  // True when libxsmm generated a kernel (false: portable loops).
  bool jit() const { return fn_ != nullptr; }

 private:
  void (*fn_)(const float*, const float*, float*) = nullptr;
  int m_, n_, k_, lda_, ldb_, ldc_;
  bool accumulate_;
};

// libxsmm's name for the code it generates here ("hsw", "skx", "cpx", ...).
const char* tile_gemm_target();

}  // namespace ringattn
