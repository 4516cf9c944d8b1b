// The CUDA attention kernels for head-dim tile 256 (every path and storage type).
#include "cuda/attention_kernel_launch.cuh"

namespace ringattn::cuda {

void launch_attention_d256(const KernelParams& p, const LaunchShape& s, cudaStream_t stream) {
  launch_attention<256>(p, s, stream);
}

}  // namespace ringattn::cuda
