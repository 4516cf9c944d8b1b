// The CUDA fused attention forward kernels (device code only; the launcher is
// attention_kernel_launch.cuh, the host API attention_cuda.cu). Per thread
// block: one query tile of one (batch, query head); it walks the key tiles the
// causal rule does not empty, folding each into the running state of
// kernel/state.hpp (m2 base 2, l, acc in fp32) exactly as the CPU kernel does:
//
//   S  = Q · K^T · scale·log2(e)          (BQ, BK)  fp32
//   mask S where the tile is diagonal or past the block's end (-inf)
//   m2' = max(m2, rowmax S);  alpha = 2^(m2 - m2');  P = 2^(S - m2')
//   l   = alpha·l + rowsum P;  acc = alpha·acc + P · V
//
// Two kernels:
//   attention_mma_kernel  tensor cores (mma.sync m16n8k16, fp32 accumulate)
//       for f16 and bf16 operands. Each of the 4 warps owns 16 query rows;
//       S, P and acc live in registers in the mma fragment layout, Q, K, V in
//       shared memory (rows padded by 16 bytes: ldmatrix without bank
//       conflicts). P enters the second product in the operand type (f16 or
//       bf16), and l sums those rounded probabilities so that o = acc / l is
//       a convex combination of V rows. K and V tiles arrive with cp.async
//       when no conversion is needed (vector_loads), V overlapping Q·K^T and
//       the next K overlapping P·V.
//   attention_fma_kernel  fp32 FMA on CUDA cores for f32 storage with
//       compute = f32: products in fp32 like the CPU kernel, S and P through
//       shared memory, one warp per row for the softmax.
//
//   cuda/launch_shape.hpp  KernelParams, the TileShape table, DevicePositions and
//                          the tile rule (shared with the host)
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/launch_shape.hpp"

namespace ringattn::cuda {

// One per head-dim tile, each in its own translation unit (attention_kernel_d<D>.cu).
void launch_attention_d64(const KernelParams& p, const LaunchShape& s, cudaStream_t stream);
void launch_attention_d128(const KernelParams& p, const LaunchShape& s, cudaStream_t stream);
void launch_attention_d256(const KernelParams& p, const LaunchShape& s, cudaStream_t stream);

namespace detail {

constexpr float kNegInf = -__builtin_huge_valf();

// ---- element types ------------------------------------------------------------------------

__device__ __forceinline__ float to_float(float x) {
  return x;
}
__device__ __forceinline__ float to_float(__half x) {
  return __half2float(x);
}
__device__ __forceinline__ float to_float(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Two floats as one register of two 16-bit operands; lo in the low half.
template <class T>
__device__ __forceinline__ std::uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, __half>) {
    return static_cast<std::uint32_t>(__half_as_ushort(__float2half_rn(lo))) |
           (static_cast<std::uint32_t>(__half_as_ushort(__float2half_rn(hi))) << 16);
  } else {
    return static_cast<std::uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
           (static_cast<std::uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16);
  }
}

// x rounded to the operand type T, back in fp32.
template <class T>
__device__ __forceinline__ float round_to(float x) {
  return to_float(from_float<T>(x));
}

// ---- PTX wrappers ---------------------------------------------------------------------------

__device__ __forceinline__ std::uint32_t smem_addr(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; src_bytes = 0 writes zeros.
__device__ __forceinline__ void cp_async16(std::uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 16-bit matrices; lane i gives the address of row i % 8 of matrix
// i / 8; register j receives matrix j, this lane holding (row lane / 4,
// columns 2·(lane % 4) and +1), or with .trans the transposed matrix.
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// d (16x8, fp32) += a (16x16, row) · b (16x8, col). Fragments (g = lane / 4,
// t = lane % 4): a0 (g, 2t..2t+1) a1 (g+8, 2t..) a2 (g, 2t+8..) a3 (g+8, 2t+8..);
// b0 (k 2t..2t+1, n g) b1 (k 2t+8.., n g); d0,d1 (g, 2t..2t+1) d2,d3 (g+8, 2t..).
template <class T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const std::uint32_t (&a)[4],
                                          std::uint32_t b0, std::uint32_t b1) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ float max_over_quad(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float sum_over_quad(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
__device__ __forceinline__ float max_over_warp(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float sum_over_warp(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// The next key tile at or after kt that the causal rule does not empty for
// query positions q (k_tiles when none).
__device__ __forceinline__ std::int64_t next_key_tile(const KernelParams& p, PositionRange q,
                                                      int block_k, std::int64_t kt) {
  if (!p.causal) return kt;
  for (; kt < p.k_tiles; ++kt) {
    const std::int64_t k0 = kt * block_k;
    const std::int64_t kn = p.n_kv - k0 < block_k ? p.n_kv - k0 : block_k;
    if (classify_device_tile(q, position_range(p.k_pos, k0, kn), true) != kTileEmpty) return kt;
  }
  return kt;
}

__device__ __forceinline__ int tile_kind_of(const KernelParams& p, PositionRange q, int block_k,
                                            std::int64_t kt) {
  const std::int64_t k0 = kt * block_k;
  const std::int64_t kn = p.n_kv - k0 < block_k ? p.n_kv - k0 : block_k;
  return classify_device_tile(q, position_range(p.k_pos, k0, kn), p.causal);
}

}  // namespace detail

// ---- traits ---------------------------------------------------------------------------------

template <int kD, class StoreT, class MmaT>
struct MmaTraits {
  static constexpr KernelPath kPath =
      std::is_same_v<MmaT, __half> ? KernelPath::mma_f16 : KernelPath::mma_bf16;
  static constexpr TileShape kTile = tile_shape(kPath, kD);
  static constexpr int kBQ = kTile.block_q, kBK = kTile.block_k, kWarps = kTile.warps;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kStride = kD + 8;  // shared row stride, elements (16 bytes of padding)
  static constexpr std::size_t kSmem =
      sizeof(MmaT) * static_cast<std::size_t>((kBQ + 2 * kBK) * kStride) + 8 * kBK;
  static_assert(kTile.d_tile == kD, "tile table and instantiation disagree on the head dim");
  static_assert(kBQ == 16 * kWarps, "each warp owns one m16 slice of query rows");
  static_assert(kBK % 16 == 0 && kD % 16 == 0, "mma k-steps are 16 wide");
  static_assert((kStride * sizeof(MmaT)) % 16 == 0,
                "ldmatrix and cp.async rows are 16-byte aligned");
  static_assert(kSmem == shared_memory_bytes(kPath, kTile),
                "smem layout and launch_shape disagree");
  static_assert(kSmem <= 99 * 1024, "must fit the smallest sm_8x opt-in shared memory");
  static_assert(std::is_same_v<MmaT, __half> || std::is_same_v<MmaT, __nv_bfloat16>);
  static_assert(sizeof(StoreT) == 2 || std::is_same_v<StoreT, float>);
};

template <int kD>
struct FmaTraits {
  static constexpr TileShape kTile = tile_shape(KernelPath::fma_f32, kD);
  static constexpr int kBQ = kTile.block_q, kBK = kTile.block_k, kThreads = kTile.threads();
  static constexpr int kRowThreads = kThreads / kBQ;  // threads sharing one query row
  static constexpr int kKeysPerThread = kBK / kRowThreads;
  static constexpr int kDimsPerThread = kD / kRowThreads;
  static constexpr std::size_t kSmem =
      4 * static_cast<std::size_t>(kBQ * (kD + 1) + kBK * (kD + 1) + kBK * kD + kBQ * (kBK + 1)) +
      8 * static_cast<std::size_t>(kBQ + kBK) + 4 * 3 * static_cast<std::size_t>(kBQ);
  static_assert(kTile.d_tile == kD, "tile table and instantiation disagree on the head dim");
  static_assert(kBK == 32, "the softmax gives one lane per key");
  static_assert(kThreads % kBQ == 0 && kBK % kRowThreads == 0 && kD % kRowThreads == 0);
  static_assert(kBQ % kTile.warps == 0, "whole rows per warp in the softmax");
  static_assert(kSmem == shared_memory_bytes(KernelPath::fma_f32, kTile),
                "smem layout and launch_shape disagree");
  static_assert(kSmem <= 99 * 1024, "must fit the smallest sm_8x opt-in shared memory");
};

namespace detail {

// Rows [0, rows_valid) x columns [0, head_dim) of a (kRows, kD) tile from
// global (row stride row_stride elements) into shared (row stride kStride),
// converted to T; other rows and columns become 0. With vec, 16-byte
// cp.async (caller commits); otherwise element by element.
template <int kRows, int kD, int kStride, int kThreads, class T, class StoreT>
__device__ __forceinline__ void load_tile(T* dst, const StoreT* src, std::int64_t row_stride,
                                          std::int64_t rows_valid, int head_dim, bool vec) {
  const int tid = static_cast<int>(threadIdx.x);
  if constexpr (std::is_same_v<StoreT, T> && sizeof(T) == 2) {
    if (vec) {
      constexpr int kChunks = kD / 8;  // 16-byte chunks per row
      for (int c = tid; c < kRows * kChunks; c += kThreads) {
        const int r = c / kChunks, col = (c % kChunks) * 8;
        const bool ok = r < rows_valid && col < head_dim;  // head_dim % 8 == 0 here
        const StoreT* from = ok ? src + r * row_stride + col : src;
        cp_async16(smem_addr(dst + r * kStride + col), from, ok ? 16 : 0);
      }
      return;
    }
  }
  for (int e = tid; e < kRows * kD; e += kThreads) {
    const int r = e / kD, col = e % kD;
    const float x = (r < rows_valid && col < head_dim) ? to_float(src[r * row_stride + col]) : 0.0f;
    if constexpr (std::is_same_v<T, float>)
      dst[r * kStride + col] = x;
    else
      dst[r * kStride + col] = from_float<T>(x);
  }
}

}  // namespace detail

// ---- the tensor-core kernel ----------------------------------------------------------------

template <int kD, class StoreT, class MmaT>
__global__ void __launch_bounds__(MmaTraits<kD, StoreT, MmaT>::kThreads)
    attention_mma_kernel(const KernelParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using Tr = MmaTraits<kD, StoreT, MmaT>;
  constexpr int kBQ = Tr::kBQ, kBK = Tr::kBK, kStride = Tr::kStride, kThreads = Tr::kThreads;
  constexpr int kNT = kBK / 8;  // n-tiles of S per warp (8 keys each)
  constexpr int kDT = kD / 8;   // n-tiles of acc per warp (8 dims each)
  using namespace detail;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  MmaT* sQ = reinterpret_cast<MmaT*>(smem_raw);                               // (BQ, kStride)
  MmaT* sK = sQ + kBQ * kStride;                                              // (BK, kStride)
  MmaT* sV = sK + kBK * kStride;                                              // (BK, kStride)
  std::int64_t* sKpos = reinterpret_cast<std::int64_t*>(sV + kBK * kStride);  // (BK)

  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t4 = lane % 4;
  const std::int64_t block = blockIdx.x;
  const std::int64_t bh = block / p.q_tiles;  // b · heads_q + h
  const std::int64_t qt = block_query_tile(block, p.q_tiles, p.causal);
  const std::int64_t b = bh / p.heads_q, h = bh % p.heads_q, hk = h / p.group;
  const std::int64_t q0 = qt * kBQ;
  const std::int64_t q_rows = p.n_q - q0 < kBQ ? p.n_q - q0 : kBQ;
  const PositionRange qrange = position_range(p.q_pos, q0, q_rows);

  std::int64_t kt = next_key_tile(p, qrange, kBK, 0);
  if (kt >= p.k_tiles) return;  // every key tile empty: the state stays as it is

  const StoreT* qg = static_cast<const StoreT*>(p.q) + b * p.q_batch_stride + h * p.q_head_stride +
                     q0 * p.q_row_stride;
  const StoreT* kg = static_cast<const StoreT*>(p.k) + b * p.k_batch_stride + hk * p.k_head_stride;
  const StoreT* vg = static_cast<const StoreT*>(p.v) + b * p.v_batch_stride + hk * p.v_head_stride;

  auto load_k = [&](std::int64_t t) {
    const std::int64_t k0 = t * kBK;
    const std::int64_t kn = p.n_kv - k0 < kBK ? p.n_kv - k0 : kBK;
    load_tile<kBK, kD, kStride, kThreads>(sK, kg + k0 * p.k_row_stride, p.k_row_stride, kn,
                                          p.head_dim, p.vector_loads);
    if (tid < kBK) sKpos[tid] = position_of(p.k_pos, k0 + tid);
  };

  // Prologue: Q, then the first K tile, each its own cp.async group.
  load_tile<kBQ, kD, kStride, kThreads>(sQ, qg, p.q_row_stride, q_rows, p.head_dim, p.vector_loads);
  cp_async_commit();
  load_k(kt);
  cp_async_commit();

  // This thread's two rows of the warp's m16 slice: g and g + 8.
  const int row0 = warp * 16 + g;
  bool row_ok[2];
  std::int64_t qpos[2], srow[2];
  float m2[2], lpart[2];  // lpart: this thread's share of l (the quad sums them at the end)
  float acc[kDT][4];      // (16 rows, kD) fragment: [n-tile][d0..d3]
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const std::int64_t r = row0 + 8 * i;
    row_ok[i] = r < q_rows;
    qpos[i] = row_ok[i] ? position_of(p.q_pos, q0 + r) : qrange.max;
    srow[i] = bh * p.n_q + q0 + r;
    m2[i] = row_ok[i] ? p.m2[srow[i]] : kNegInf;
    lpart[i] = row_ok[i] && t4 == 0 ? p.l[srow[i]] : 0.0f;
  }
#pragma unroll
  for (int nt = 0; nt < kDT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int i = e / 2, col = nt * 8 + 2 * t4 + (e % 2);
      acc[nt][e] = row_ok[i] && col < p.head_dim ? p.acc[srow[i] * p.head_dim + col] : 0.0f;
    }

  const int k_steps = (p.head_dim + 15) / 16;  // 16-column steps that hold data
  while (kt < p.k_tiles) {
    const std::int64_t k0 = kt * kBK;
    const int kn = static_cast<int>(p.n_kv - k0 < kBK ? p.n_kv - k0 : kBK);
    const int kind = tile_kind_of(p, qrange, kBK, kt);

    // V of this tile streams in while Q·K^T runs.
    load_tile<kBK, kD, kStride, kThreads>(sV, vg + k0 * p.v_row_stride, p.v_row_stride, kn,
                                          p.head_dim, p.vector_loads);
    cp_async_commit();
    cp_async_wait<1>();  // Q and this K have landed
    __syncthreads();

    // S = Q · K^T  (16 rows of this warp, BK keys)
    float s[kNT][4];
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] = 0.0f;
    for (int ks = 0; ks < k_steps; ++ks) {
      std::uint32_t a[4];
      {
        const int mi = lane / 8;
        const int r = warp * 16 + lane % 8 + (mi % 2) * 8, c = ks * 16 + (mi / 2) * 8;
        ldmatrix_x4(a, smem_addr(sQ + r * kStride + c));
      }
#pragma unroll
      for (int nb = 0; nb < kBK / 16; ++nb) {
        std::uint32_t bf[4];
        const int mi = lane / 8;
        const int r = nb * 16 + lane % 8 + (mi / 2) * 8, c = ks * 16 + (mi % 2) * 8;
        ldmatrix_x4(bf, smem_addr(sK + r * kStride + c));
        mma_16816<MmaT>(s[2 * nb], a, bf[0], bf[1]);
        mma_16816<MmaT>(s[2 * nb + 1], a, bf[2], bf[3]);
      }
    }

    // Base 2, and the mask where the tile needs one.
    const bool need_mask = kind == kTileDiagonal || kn < kBK;
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[nt][e] * p.scale_log2;
        if (need_mask) {
          const int j = nt * 8 + 2 * t4 + (e % 2);
          const bool visible = j < kn && (kind != kTileDiagonal || sKpos[j] <= qpos[e / 2]);
          if (!visible) x = kNegInf;
        }
        s[nt][e] = x;
      }

      // Online softmax on this thread's two rows (the quad of 4 lanes holds a row).
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float mx = kNegInf;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * i], s[nt][2 * i + 1]));
      mx = max_over_quad(mx);
      const float m_new = fmaxf(m2[i], mx);
      // Nothing visible yet: probabilities 0 and the state as it was.
      const float m_use = m_new == kNegInf ? 0.0f : m_new;
      const float alpha = exp2f(m2[i] - m_use);  // 0 when m2 was -inf
      m2[i] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 2 * i; e < 2 * i + 2; ++e) {
          // Rounded to the operand type here, so that l sums what P·V multiplies.
          const float pr = round_to<MmaT>(exp2f(s[nt][e] - m_use));
          s[nt][e] = pr;
          sum += pr;
        }
      lpart[i] = lpart[i] * alpha + sum;
#pragma unroll
      for (int nt = 0; nt < kDT; ++nt) {
        acc[nt][2 * i] *= alpha;
        acc[nt][2 * i + 1] *= alpha;
      }
    }

    // P as A fragments: keys 16kk..16kk+15 are S n-tiles 2kk and 2kk+1.
    std::uint32_t pa[kBK / 16][4];
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
      pa[kk][0] = pack2<MmaT>(s[2 * kk][0], s[2 * kk][1]);
      pa[kk][1] = pack2<MmaT>(s[2 * kk][2], s[2 * kk][3]);
      pa[kk][2] = pack2<MmaT>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pa[kk][3] = pack2<MmaT>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    }

    __syncthreads();  // every warp is done with sK and sKpos
    const std::int64_t next = next_key_tile(p, qrange, kBK, kt + 1);
    if (next < p.k_tiles) load_k(next);  // overlaps P·V
    cp_async_commit();                   // (an empty group when there is no next tile)
    cp_async_wait<1>();                  // V has landed
    __syncthreads();

    // acc += P · V  (16 rows, kD dims); dim tiles past head_dim hold zeros: skipped.
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk)
#pragma unroll
      for (int np = 0; np < kD / 16; ++np) {
        if (np * 16 < p.head_dim) {
          std::uint32_t bf[4];
          const int mi = lane / 8;
          const int r = kk * 16 + lane % 8 + (mi % 2) * 8, c = np * 16 + (mi / 2) * 8;
          ldmatrix_x4_trans(bf, smem_addr(sV + r * kStride + c));
          mma_16816<MmaT>(acc[2 * np], pa[kk], bf[0], bf[1]);
          mma_16816<MmaT>(acc[2 * np + 1], pa[kk], bf[2], bf[3]);
        }
      }
    __syncthreads();  // every warp is done with sV before the next tile's V
    kt = next;
  }
  cp_async_wait<0>();

  // Back to the state: the quad's partial sums make l.
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float l = sum_over_quad(lpart[i]);
    if (!row_ok[i]) continue;
    if (t4 == 0) {
      p.m2[srow[i]] = m2[i];
      p.l[srow[i]] = l;
    }
#pragma unroll
    for (int nt = 0; nt < kDT; ++nt)
#pragma unroll
      for (int e = 2 * i; e < 2 * i + 2; ++e) {
        const int col = nt * 8 + 2 * t4 + (e % 2);
        if (col < p.head_dim) p.acc[srow[i] * p.head_dim + col] = acc[nt][e];
      }
  }
#else
  (void)p;
  __trap();  // built for an architecture without bf16 mma.sync (the launcher refuses those)
#endif
}

// ---- the fp32 FMA kernel ----------------------------------------------------------------------

template <int kD>
__global__ void __launch_bounds__(FmaTraits<kD>::kThreads)
    attention_fma_kernel(const KernelParams p) {
  using Tr = FmaTraits<kD>;
  constexpr int kBQ = Tr::kBQ, kBK = Tr::kBK, kThreads = Tr::kThreads;
  constexpr int kRT = Tr::kRowThreads, kKPT = Tr::kKeysPerThread, kDPT = Tr::kDimsPerThread;
  constexpr int kWarps = kThreads / 32;
  using namespace detail;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  std::int64_t* sQpos = reinterpret_cast<std::int64_t*>(smem_raw);  // (BQ)
  std::int64_t* sKpos = sQpos + kBQ;                                // (BK)
  float* sQ = reinterpret_cast<float*>(sKpos + kBK);                // (BQ, D+1)
  float* sK = sQ + kBQ * (kD + 1);                                  // (BK, D+1)
  float* sV = sK + kBK * (kD + 1);                                  // (BK, D)
  float* sS = sV + kBK * kD;                                        // (BQ, BK+1)
  float* sM = sS + kBQ * (kBK + 1);                                 // (BQ) running max, base 2
  float* sL = sM + kBQ;                                             // (BQ) running sum
  float* sAlpha = sL + kBQ;                                         // (BQ) this tile's rescale

  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const std::int64_t block = blockIdx.x;
  const std::int64_t bh = block / p.q_tiles;
  const std::int64_t qt = block_query_tile(block, p.q_tiles, p.causal);
  const std::int64_t b = bh / p.heads_q, h = bh % p.heads_q, hk = h / p.group;
  const std::int64_t q0 = qt * kBQ;
  const std::int64_t q_rows = p.n_q - q0 < kBQ ? p.n_q - q0 : kBQ;
  const PositionRange qrange = position_range(p.q_pos, q0, q_rows);

  std::int64_t kt = next_key_tile(p, qrange, kBK, 0);
  if (kt >= p.k_tiles) return;

  const float* qg = static_cast<const float*>(p.q) + b * p.q_batch_stride + h * p.q_head_stride +
                    q0 * p.q_row_stride;
  const float* kg = static_cast<const float*>(p.k) + b * p.k_batch_stride + hk * p.k_head_stride;
  const float* vg = static_cast<const float*>(p.v) + b * p.v_batch_stride + hk * p.v_head_stride;

  load_tile<kBQ, kD, kD + 1, kThreads>(sQ, qg, p.q_row_stride, q_rows, p.head_dim, false);
  if (tid < kBQ) {
    const bool ok = tid < q_rows;
    sQpos[tid] = ok ? position_of(p.q_pos, q0 + tid) : qrange.max;
    const std::int64_t sr = bh * p.n_q + q0 + tid;
    sM[tid] = ok ? p.m2[sr] : kNegInf;
    sL[tid] = ok ? p.l[sr] : 0.0f;
  }

  // This thread: query row r, keys c + kRT·j, dims c + kRT·i.
  const int r = tid / kRT, c = tid % kRT;
  const bool row_ok = r < q_rows;
  const std::int64_t srow = bh * p.n_q + q0 + r;
  float acc[kDPT];
#pragma unroll
  for (int i = 0; i < kDPT; ++i) {
    const int d = c + kRT * i;
    acc[i] = row_ok && d < p.head_dim ? p.acc[srow * p.head_dim + d] : 0.0f;
  }

  while (kt < p.k_tiles) {
    const std::int64_t k0 = kt * kBK;
    const int kn = static_cast<int>(p.n_kv - k0 < kBK ? p.n_kv - k0 : kBK);
    const int kind = tile_kind_of(p, qrange, kBK, kt);
    load_tile<kBK, kD, kD + 1, kThreads>(sK, kg + k0 * p.k_row_stride, p.k_row_stride, kn,
                                         p.head_dim, false);
    load_tile<kBK, kD, kD, kThreads>(sV, vg + k0 * p.v_row_stride, p.v_row_stride, kn, p.head_dim,
                                     false);
    if (tid < kBK) sKpos[tid] = position_of(p.k_pos, k0 + tid);
    __syncthreads();

    // S = Q · K^T, base 2, masked.
    float s[kKPT];
#pragma unroll
    for (int j = 0; j < kKPT; ++j) s[j] = 0.0f;
    for (int d = 0; d < p.head_dim; ++d) {
      const float q = sQ[r * (kD + 1) + d];
#pragma unroll
      for (int j = 0; j < kKPT; ++j) s[j] = fmaf(q, sK[(c + kRT * j) * (kD + 1) + d], s[j]);
    }
    const std::int64_t qpos = sQpos[r];
#pragma unroll
    for (int j = 0; j < kKPT; ++j) {
      const int key = c + kRT * j;
      const bool visible = key < kn && (kind != kTileDiagonal || sKpos[key] <= qpos);
      sS[r * (kBK + 1) + key] = visible ? s[j] * p.scale_log2 : kNegInf;
    }
    __syncthreads();

    // Online softmax: one warp per row, one lane per key.
    for (int row = warp; row < kBQ; row += kWarps) {
      const float x = sS[row * (kBK + 1) + lane];
      const float m_old = sM[row];
      const float m_new = fmaxf(m_old, max_over_warp(x));
      const float m_use = m_new == kNegInf ? 0.0f : m_new;
      const float pr = exp2f(x - m_use);
      const float sum = sum_over_warp(pr);
      sS[row * (kBK + 1) + lane] = pr;
      if (lane == 0) {
        const float alpha = exp2f(m_old - m_use);
        sAlpha[row] = alpha;
        sL[row] = sL[row] * alpha + sum;
        sM[row] = m_new;
      }
    }
    __syncthreads();

    // acc = alpha·acc + P · V
    const float alpha = sAlpha[r];
#pragma unroll
    for (int i = 0; i < kDPT; ++i) acc[i] *= alpha;
    for (int j = 0; j < kn; ++j) {
      const float pj = sS[r * (kBK + 1) + j];
#pragma unroll
      for (int i = 0; i < kDPT; ++i) acc[i] = fmaf(pj, sV[j * kD + c + kRT * i], acc[i]);
    }
    __syncthreads();  // before the next tile overwrites sK, sV, sS
    kt = next_key_tile(p, qrange, kBK, kt + 1);
  }

  if (row_ok) {
#pragma unroll
    for (int i = 0; i < kDPT; ++i) {
      const int d = c + kRT * i;
      if (d < p.head_dim) p.acc[srow * p.head_dim + d] = acc[i];
    }
    if (c == 0) {
      p.m2[srow] = sM[r];
      p.l[srow] = sL[r];
    }
  }
}

}  // namespace ringattn::cuda
