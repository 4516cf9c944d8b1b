// The CUDA side of the attention API: the small kernels around the fused one
// (fill, finalize) and the dispatch of a planned launch to its head-dim
// tile's translation unit. C++17 (nvcc), no AttnParams here: the host API in
// attention_cuda.cpp plans the launch and fills KernelParams.
#include <cuda_runtime.h>

#include <cstdint>

#include "core/error.hpp"
#include "cuda/attention_kernel.cuh"
#include "cuda/launch_shape.hpp"

namespace ringattn::cuda {
namespace {

constexpr double kLn2 = 0.6931471805599453;

__global__ void fill_kernel(float* x, std::int64_t n, float value) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride)
    x[i] = value;
}

// One thread per element of o; o may be acc (each element reads only itself).
__global__ void finalize_kernel(const float* m2, const float* l, const float* acc, float* o,
                                float* lse, std::int64_t rows, int head_dim) {
  const std::int64_t n = rows * head_dim;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const std::int64_t r = i / head_dim;
    const float lr = l[r];
    o[i] = lr > 0.0f ? acc[i] / lr : 0.0f;
    if (lse && i % head_dim == 0)
      lse[r] = lr > 0.0f ? static_cast<float>(
                               (static_cast<double>(m2[r]) + log2(static_cast<double>(lr))) * kLn2)
                         : -__builtin_huge_valf();
  }
}

unsigned grid_for(std::int64_t n, int threads) {
  const std::int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

}  // namespace

void launch_fill(float* x, std::int64_t n, float value, void* stream) {
  if (n == 0) return;
  fill_kernel<<<grid_for(n, 256), 256, 0, static_cast<cudaStream_t>(stream)>>>(x, n, value);
  RA_CUDA_CHECK(cudaGetLastError());
}

void launch_finalize(const float* m2, const float* l, const float* acc, float* o, float* lse,
                     std::int64_t rows, std::int64_t head_dim, void* stream) {
  if (rows == 0 || head_dim == 0) return;
  finalize_kernel<<<grid_for(rows * head_dim, 256), 256, 0, static_cast<cudaStream_t>(stream)>>>(
      m2, l, acc, o, lse, rows, static_cast<int>(head_dim));
  RA_CUDA_CHECK(cudaGetLastError());
}

void launch_attention_kernel(const KernelParams& p, const LaunchShape& s, void* stream) {
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (s.tile.d_tile) {
    case 64:
      launch_attention_d64(p, s, st);
      return;
    case 128:
      launch_attention_d128(p, s, st);
      return;
    case 256:
      launch_attention_d256(p, s, st);
      return;
  }
  RA_CHECK(false, internal, "no CUDA attention kernel for head-dim tile ", s.tile.d_tile);
}

}  // namespace ringattn::cuda
