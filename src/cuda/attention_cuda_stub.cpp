// The CUDA attention API when the CUDA parts were not built (no toolkit or
// NCCL at configure time, or RINGATTN_CUDA=OFF): every call that would touch
// a device throws Error(usage) saying so; names and reports still work.
#include <string>
#include <vector>

#include "core/error.hpp"
#include "cuda/attention_cuda.hpp"
#include "cuda/launch_shape.hpp"

namespace ringattn::cuda {
namespace {
[[noreturn]] void no_cuda(const char* what) {
  RA_CHECK(false, usage, "this ringattn was built without CUDA (", what,
           " needs a build where CMake found the CUDA toolkit and NCCL)");
}
}  // namespace

DeviceAttnState::DeviceAttnState(std::int64_t, std::int64_t, std::int64_t, std::int64_t) {
  no_cuda("a device attention state");
}
DeviceAttnState::~DeviceAttnState() = default;
DeviceAttnState::DeviceAttnState(DeviceAttnState&&) noexcept {}
DeviceAttnState& DeviceAttnState::operator=(DeviceAttnState&&) noexcept {
  return *this;
}
void DeviceAttnState::reset(Stream) {
  no_cuda("DeviceAttnState::reset");
}

void update_state(const AttnParams&, DeviceAttnState&, Stream) {
  no_cuda("cuda::update_state");
}
void finalize(DeviceAttnState&, float*, float*, Stream) {
  no_cuda("cuda::finalize");
}
void attention_forward(const AttnParams&, float*, float*, Stream) {
  no_cuda("cuda::attention_forward");
}

std::string kernel_implementation(const AttnParams& p) {
  LaunchShape s;
  s.path = choose_path(p.dtype, p.compute);
  s.tile = tile_shape(s.path, head_dim_tile(p.head_dim));
  return s.name() + " compute=" + compute_type_name(p.compute) + " (not built)";
}

DeviceBuffer::DeviceBuffer(std::size_t) {
  no_cuda("device memory");
}
DeviceBuffer::~DeviceBuffer() = default;
DeviceBuffer::DeviceBuffer(DeviceBuffer&&) noexcept {}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&&) noexcept {
  return *this;
}
void DeviceBuffer::upload(const void*, std::size_t) {
  no_cuda("device memory");
}
void DeviceBuffer::download(void*, std::size_t) const {
  no_cuda("device memory");
}
void copy_to_host(void*, const void*, std::size_t) {
  no_cuda("device memory");
}
void synchronize(Stream) {
  no_cuda("cuda::synchronize");
}
DeviceInfo current_device_info() {
  no_cuda("cuda::current_device_info");
}
std::vector<double> time_attention_forward(const AttnParams&, int, int) {
  no_cuda("cuda::time_attention_forward");
}

}  // namespace ringattn::cuda
