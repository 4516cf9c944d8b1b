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

// Which code multiplies a TileGemmBf16's tiles.
enum class Bf16Gemm {
  amx,       // AMX tiles (tdpbf16ps), where the CPU has them and m, n, k are multiples
             // of 32; other shapes (or no AMX) take libxsmm's kernel
  libxsmm,   // libxsmm's kernel: vdpbf16ps on CPUs with AVX512_BF16
  portable,  // plain loops (tests check the others against them)
};
const char* bf16_gemm_name(Bf16Gemm g);

// C(m x n, ldc) f32 = A · B [+ C] with bf16 operands (bit patterns) and fp32
// accumulation. vdpbf16ps and AMX's tdpbf16ps multiply pairs along k, so A
// comes in their VNNI layout (k/2, m, 2): the pair (A[i][2p], A[i][2p+1])
// adjacent, pairs of one p for all i contiguous. B is (k x n, ldb)
// column-major; k must be even (callers zero-pad). In row-major terms
// C^T = B^T · A^T, which is AMX's shape: B^T's rows are its A tiles and the
// VNNI A is its B tiles as they lie.
class TileGemmBf16 {
 public:
  TileGemmBf16(int m, int n, int k, int ldb, int ldc, bool accumulate,
               Bf16Gemm want = Bf16Gemm::libxsmm);
  void operator()(const std::uint16_t* a, const std::uint16_t* b, float* c) const;
  // The code that runs (want, or what it fell back on).
  Bf16Gemm runs() const { return runs_; }
  bool jit() const { return runs_ != Bf16Gemm::portable; }

 private:
  void (*fn_)(const std::uint16_t*, const std::uint16_t*, float*) = nullptr;
  int m_, n_, k_, ldb_, ldc_;
  bool accumulate_;
  Bf16Gemm runs_ = Bf16Gemm::portable;
};

// libxsmm's name for the code it generates here ("hsw", "skx", "cpx", ...).
const char* tile_gemm_target();

}  // namespace ringattn
