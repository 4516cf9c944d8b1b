// Device discovery when the CUDA parts were not built (no toolkit or NCCL at
// configure time, or RINGATTN_CUDA=OFF).
#include "cuda/device.hpp"

namespace ringattn {

bool cuda_built() {
  return false;
}
int cuda_device_count() {
  return 0;
}
std::string cuda_summary() {
  return "not built (CMake found no CUDA toolkit and NCCL)";
}

}  // namespace ringattn
