// The tile products of the fused kernel: C (+)= A·B on small fp32 tiles in
// column-major terms, JIT-compiled by libxsmm for this CPU's vector ISA (AVX2,
// AVX-512, ...) when it can, a portable loop otherwise.
//
// Measured on the project machine (Zen 3, AVX2): libxsmm's kernels for the
// attention tile shapes reach ~0.93 of the FMA peak; see bench/ and the
// kernel issue's note.
#pragma once

#include <cstdint>

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

// C(m x n, ldc) f32 = A · B [+ C] with bf16 operands (bit patterns) and fp32
// accumulation: on CPUs with AVX512_BF16, libxsmm emits vdpbf16ps, which
// multiplies pairs along k, so A comes in its VNNI layout (k/2, m, 2): the
// pair (A[i][2p], A[i][2p+1]) adjacent, pairs of one p for all i contiguous.
// B is (k x n, ldb) column-major; k must be even (callers zero-pad).
class TileGemmBf16 {
 public:
  // allow_jit false: the portable loops (tests check them against libxsmm's).
  TileGemmBf16(int m, int n, int k, int ldb, int ldc, bool accumulate, bool allow_jit = true);
  void operator()(const std::uint16_t* a, const std::uint16_t* b, float* c) const;
  bool jit() const { return fn_ != nullptr; }

 private:
  void (*fn_)(const std::uint16_t*, const std::uint16_t*, float*) = nullptr;
  int m_, n_, k_, ldb_, ldc_;
  bool accumulate_;
};

// libxsmm's name for the code it generates here ("hsw", "skx", "cpx", ...).
const char* tile_gemm_target();

}  // namespace ringattn
