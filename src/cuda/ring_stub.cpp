// The device ring when the CUDA parts were not built (no toolkit or NCCL at
// configure time, or RINGATTN_CUDA=OFF): constructing one is a usage error.
// check_cuda_backend (device_select.hpp) reports the same to every rank first.
#include <string>

#include "core/error.hpp"
#include "cuda/ring_cuda.hpp"

namespace ringattn::cuda {

struct DeviceRing::Impl {};

DeviceRing::DeviceRing(MPI_Comm, const std::string&, double) {
  // The same text on every rank (no host:rank suffix): every rank throws it.
  throw Error(ErrorClass::usage,
              "this ringattn was built without CUDA (CMake found no CUDA toolkit and NCCL, or "
              "RINGATTN_CUDA=OFF): no device ring; use --backend cpu");
}

DeviceRing::~DeviceRing() = default;

RingStats DeviceRing::run(const Partition&, const Partition&, const RingShards&, float*, float*,
                          const RingOptions&) {
  RA_CHECK(false, internal, "DeviceRing::run in a build without CUDA");
  return {};
}

int DeviceRing::rank() const {
  return 0;
}
int DeviceRing::size() const {
  return 1;
}
int DeviceRing::device() const {
  return -1;
}
const std::string& DeviceRing::transport() const {
  static const std::string none;
  return none;
}

}  // namespace ringattn::cuda
