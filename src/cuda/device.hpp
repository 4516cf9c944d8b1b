// CUDA devices visible to this process, callable in every build.
//
// The CUDA parts (device kernels, device memory, the NCCL and staged-MPI
// transports, the device ring) exist only in a build where CMake found the
// toolkit and NCCL (RINGATTN_HAVE_CUDA). Code outside them that names them
// does so under `if constexpr (kCudaBuilt)`, so a build without them needs
// no stand-in definitions: the discarded branch is never linked.
#pragma once

#include <string>

namespace ringattn {

#ifdef RINGATTN_HAVE_CUDA
inline constexpr bool kCudaBuilt = true;
#else
inline constexpr bool kCudaBuilt = false;
#endif

// Why a build without the CUDA parts cannot do what was asked.
inline constexpr const char* kNoCudaBuild =
    "this ringattn was built without CUDA (CMake found no CUDA toolkit and NCCL, or "
    "RINGATTN_CUDA=OFF)";

namespace cuda {
// Defined by the CUDA parts only (device.cu).
int device_count();
std::string devices_summary();
}  // namespace cuda

inline bool cuda_built() {
  return kCudaBuilt;
}
// CUDA devices usable now (0 without a driver, a device, or the CUDA parts).
inline int cuda_device_count() {
  if constexpr (kCudaBuilt)
    return cuda::device_count();
  else
    return 0;
}
// One line: the devices found, or why there are none.
inline std::string cuda_summary() {
  if constexpr (kCudaBuilt)
    return cuda::devices_summary();
  else
    return "not built (CMake found no CUDA toolkit and NCCL)";
}

}  // namespace ringattn
