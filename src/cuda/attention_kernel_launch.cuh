// The launcher of the CUDA attention kernels: turns the runtime choice (path,
// storage type) into one compile-time instantiation and launches it. Each
// attention_kernel_d<D>.cu instantiates launch_attention<D> for one head-dim
// tile, so the kernels of one tile compile apart from the others.
#pragma once

#include <cuda_runtime.h>

#include "core/error.hpp"
#include "cuda/attention_kernel.cuh"

namespace ringattn::cuda {

template <class Kernel>
void launch_kernel(Kernel kernel, const KernelParams& p, const LaunchShape& s,
                   cudaStream_t stream) {
  if (s.blocks == 0) return;
  // Above 48 KiB of dynamic shared memory a kernel must opt in.
  RA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(s.smem)));
  kernel<<<dim3(static_cast<unsigned>(s.blocks)), dim3(static_cast<unsigned>(s.tile.threads())),
           s.smem, stream>>>(p);
  RA_CUDA_CHECK(cudaGetLastError());
}

template <int kD>
void launch_attention(const KernelParams& p, const LaunchShape& s, cudaStream_t stream) {
  RA_CHECK(s.tile.d_tile == kD, internal, "launch for d tile ", s.tile.d_tile, " reached the d ",
           kD, " instantiation");
  switch (s.operands) {
    case Operands::f32_fma:
      launch_kernel(attention_fma_kernel<kD>, p, s, stream);
      return;
    case Operands::f16:
      launch_kernel(attention_mma_kernel<kD, __half, __half>, p, s, stream);
      return;
    case Operands::bf16:
      launch_kernel(attention_mma_kernel<kD, __nv_bfloat16, __nv_bfloat16>, p, s, stream);
      return;
    case Operands::f16_as_bf16:
      launch_kernel(attention_mma_kernel<kD, __half, __nv_bfloat16>, p, s, stream);
      return;
    case Operands::f32_as_bf16:
      launch_kernel(attention_mma_kernel<kD, float, __nv_bfloat16>, p, s, stream);
      return;
  }
  RA_CHECK(false, internal, "no CUDA attention instantiation for ", s.name());
}

}  // namespace ringattn::cuda
