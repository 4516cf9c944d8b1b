// The CUDA attention kernels for head-dim tile 128 (every path and storage type).
#include "cuda/attention_kernel_launch.cuh"

namespace ringattn::cuda {

void launch_attention_d128(const KernelParams& p, const LaunchShape& s, cudaStream_t stream) {
  launch_attention<128>(p, s, stream);
}

}  // namespace ringattn::cuda
