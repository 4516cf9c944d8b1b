// The build's description (see build_info.hpp).
#include "job/build_info.hpp"

#include "core/cpu.hpp"
#include "core/version.hpp"
#include "cuda/device.hpp"
#include "kernel/tile_gemm.hpp"

namespace ringattn {

std::string build_info_text() {
  return std::string("ringattn ") + kVersion + "\n  CPU : vector ISA " + vector_isa() +
         ", libxsmm target " + tile_gemm_target() + ", " + std::to_string(affinity_cores()) +
         " cores\n  CUDA: " + cuda_summary();
}

}  // namespace ringattn
