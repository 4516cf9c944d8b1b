// Device discovery for the CUDA build (cuda/device.hpp's cuda_device_count
// and cuda_summary call these). Compiled only when CMake found CUDA and NCCL.
#include <cuda_runtime.h>
#include <nccl.h>

#include <string>

#include "cuda/device.hpp"

namespace ringattn::cuda {

int device_count() {
  int n = 0;
  // No driver or no device is a normal condition here, not an error.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error for later callers
    return 0;
  }
  return n;
}

std::string devices_summary() {
  int nccl_version = 0;
  ncclGetVersion(&nccl_version);
  std::string s = "CUDA runtime " + std::to_string(CUDART_VERSION) + ", NCCL " +
                  std::to_string(nccl_version) + ": ";
  int n = 0;
  const cudaError_t rc = cudaGetDeviceCount(&n);
  if (rc != cudaSuccess) {
    cudaGetLastError();
    return s + "no usable device (" + cudaGetErrorString(rc) + ")";
  }
  s += std::to_string(n) + " device(s)";
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) == cudaSuccess)
      s += std::string(i ? ", " : " [") + prop.name + " sm_" + std::to_string(prop.major) +
           std::to_string(prop.minor);
  }
  return n ? s + "]" : s;
}

}  // namespace ringattn::cuda
