// CUDA devices visible to this process. Declared whether or not the CUDA parts
// were built: without them the count is 0 and the summary says why.
#pragma once

#include <string>

namespace ringattn {

// True when this binary was built with the CUDA parts (toolkit and NCCL found).
bool cuda_built();
// CUDA devices usable now (0 without a driver, a device, or the CUDA build).
int cuda_device_count();
// One line: the devices found, or why there are none.
std::string cuda_summary();

}  // namespace ringattn
