// The device ring when the CUDA parts were not built (no toolkit or NCCL at
// configure time, or RINGATTN_CUDA=OFF): the constructor checks its
// arguments as the real one does, then refuses. check_cuda_backend
// (comm/device_select.hpp) reports the same to every rank first.
#include <string>

#include "core/error.hpp"
#include "ring/device_ring.hpp"

namespace ringattn {

struct DeviceRing::Impl {};

DeviceRing::DeviceRing(MPI_Comm comm, const std::string& transport, double comm_timeout_s) {
  check_device_ring_arguments(comm, transport, comm_timeout_s);
  // The same text on every rank (no host:rank suffix): every rank throws it.
  throw Error(ErrorClass::usage,
              "this ringattn was built without CUDA (CMake found no CUDA toolkit and NCCL, or "
              "RINGATTN_CUDA=OFF): no device ring; use --backend cpu");
}

DeviceRing::~DeviceRing() = default;

KvBlockRef DeviceRing::home_block(const RingLayout&) {
  RA_CHECK(false, internal, "DeviceRing::home_block in a build without CUDA");
  return {};
}

RingStats DeviceRing::run(const RingLayout&, const void*, float*, const RingOptions&) {
  RA_CHECK(false, internal, "DeviceRing::run in a build without CUDA");
  return {};
}

const float* DeviceRing::output() const {
  return nullptr;
}

const std::string& DeviceRing::transport() const {
  static const std::string none;
  return none;
}

}  // namespace ringattn
