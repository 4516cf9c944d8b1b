// The one description of a local attention problem that the CPU kernel (and
// later the CUDA kernel) reads: pointers, strides, sizes, scale, causal flag,
// global positions. Filled once by the caller, passed whole.
//
// Layout per tensor is (batch, head, row, dim) with arbitrary element strides
// for the first three and unit stride along dim. Query head h reads key/value
// head h / (heads_q / heads_kv) (grouped-query attention, K/V never expanded).
#pragma once

#include <cstdint>
#include <string>

#include "core/dtype.hpp"
#include "core/positions.hpp"
#include "core/shape.hpp"
#include "core/visibility.hpp"

namespace ringattn {

// How the tile products are computed.
enum class ComputeType {
  f32,   // fp32 products, fp32 accumulation (default)
  bf16,  // Q, K, P and V rounded to bf16 before the products, fp32 accumulation
};
const char* compute_type_name(ComputeType c);
ComputeType parse_compute_type(const char* s);

// The CPU kernel's tile shape (BQ query rows x BK keys). Each vector ISA's
// traits in attention.cpp have their own; any CPU runs any of them, so the
// tests check every shape on every machine.
enum class TileShape {
  native,  // the shape of the widest ISA this CPU has
  avx2,    // 256 x 64
  avx512,  // 128 x 256
};
const char* tile_shape_name(TileShape t);

// The code path of the kernel's vector steps (softmax, compensated sums),
// compiled once per ISA in softmax_tile.cpp.
enum class VectorIsa {
  native,   // the widest this CPU has
  avx512,   // 16-float vectors
  avx2,     // 8-float vectors
  generic,  // 4-float vectors, any x86-64
};
const char* vector_isa_name(VectorIsa isa);

// How `compute = bf16` multiplies its bf16 tiles.
enum class Bf16Products {
  native,  // amx where the CPU has AMX, else dot where it has AVX512_BF16, else fp32
  amx,     // AMX tile dot products (tdpbf16ps) into fp32 tiles; tile products whose
           // dims are not multiples of 32 take the dot path's kernels
  dot,     // bf16 dot products (vdpbf16ps) into fp32 accumulators: ~2x the fp32 rate on
           // Zen 4, 0.5x on Sapphire Rapids (one port)
  fp32,    // the bf16 values widened and multiplied in fp32 (same rounding, fp32 speed)
};
const char* bf16_products_name(Bf16Products b);
// The path `native` stands for on this CPU; any other unchanged.
Bf16Products resolve_bf16_products(Bf16Products b);
// Why this CPU cannot run products b (amx: no AMX or no permission; dot: no
// AVX512_BF16), or "" when it can.
std::string bf16_products_missing(Bf16Products b);

// Which compiled variant of the CPU kernel runs. The defaults are this CPU's
// fastest; tests pick each in turn.
struct CpuVariant {
  TileShape tiles = TileShape::native;
  VectorIsa isa = VectorIsa::native;         // one this CPU runs (validate() checks)
  Bf16Products bf16 = Bf16Products::native;  // compute = bf16 only; see cpu_has()
};

struct TensorRef {
  const void* data = nullptr;
  std::int64_t batch_stride = 0;  // elements between batches
  std::int64_t head_stride = 0;   // elements between heads
  std::int64_t row_stride = 0;    // elements between rows (tokens)
};

struct AttnParams {
  TensorRef q;               // (batch, heads_q, n_q, head_dim)
  TensorRef k;               // (batch, heads_kv, n_kv, head_dim)
  TensorRef v;               // (batch, heads_kv, n_kv, head_dim)
  DType dtype = DType::f32;  // storage type of q, k and v

  std::int64_t batch = 1;
  std::int64_t heads_q = 1;
  std::int64_t heads_kv = 1;  // divides heads_q
  std::int64_t n_q = 0;       // query rows in this block (may be 0)
  std::int64_t n_kv = 0;      // key/value rows in this block (may differ from n_q)
  std::int64_t head_dim = 0;  // 1 .. kMaxHeadDim

  float scale = 0;  // softmax scale; 0 means 1/sqrt(head_dim)
  bool causal = false;
  Window window;  // keys outside it are hidden too (causal caps its right side at 0)
  // Global positions of the query and key rows; empty means 0, 1, 2, ...
  Positions q_pos;  // size n_q when set
  Positions k_pos;  // size n_kv when set

  ComputeType compute = ComputeType::f32;
  int threads = 1;  // threads this call may use (>= 1)
  CpuVariant cpu;   // the CPU kernel's tile shape and vector path

  // Called every few hundred microseconds from the calling thread while the
  // kernel computes, if set, with an estimate of the fraction of the call's
  // work done (0 to 1): the ring polls its transfer here, because MPI moves
  // a large message only when the process calls into it, and reports
  // progress within a long step.
  void (*progress)(void*, double done) = nullptr;
  void* progress_arg = nullptr;

  // Dense (B, H, N, D) tensors with the given sizes: strides filled in.
  static AttnParams dense(const void* q, const void* k, const void* v, DType dtype,
                          std::int64_t batch, std::int64_t heads_q, std::int64_t heads_kv,
                          std::int64_t n_q, std::int64_t n_kv, std::int64_t head_dim);

  float effective_scale() const;
  Visibility visibility() const { return Visibility::of(causal, window); }
  // Throws Error(usage) naming the first inconsistent field.
  void validate() const;
};

}  // namespace ringattn
