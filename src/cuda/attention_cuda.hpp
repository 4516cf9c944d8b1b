// The CUDA fused attention kernel: the math and state semantics of
// kernel/attention.hpp (running m2 in base 2, l and acc in fp32; finalize to o
// and natural-log lse; causal on global positions; GQA without expanding K/V;
// cross-attention; rows with no visible key give o = 0, lse = -inf), on the
// current CUDA device. Defined only in a build with the CUDA parts: callers
// outside them guard each call with `if constexpr (kCudaBuilt)`
// (cuda/device.hpp). kernel_implementation (cuda/launch_shape.hpp) names the
// kernel a problem would get in any build.
//
// Pointers inside AttnParams (q, k, v) and every float* here are device
// pointers; the Positions in AttnParams are host descriptions (the call
// encodes their few segments into the launch). Streams are cudaStream_t,
// kept opaque so CPU-only code can include this header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kernel/params.hpp"

namespace ringattn::cuda {

using Stream = void*;  // cudaStream_t; nullptr = the legacy default stream

// The running state of kernel/state.hpp on the device: m2 and l are
// (batch, heads, rows), acc is (batch, heads, rows, head_dim), fp32, dense.
// Owns its device memory; move-only.
class DeviceAttnState {
 public:
  DeviceAttnState() = default;
  DeviceAttnState(std::int64_t batch, std::int64_t heads, std::int64_t rows, std::int64_t head_dim);
  ~DeviceAttnState();
  DeviceAttnState(DeviceAttnState&& o) noexcept;
  DeviceAttnState& operator=(DeviceAttnState&& o) noexcept;
  DeviceAttnState(const DeviceAttnState&) = delete;
  DeviceAttnState& operator=(const DeviceAttnState&) = delete;

  // Back to "no key seen" (m2 = -inf, l = 0, acc = 0), asynchronously on stream.
  void reset(Stream stream);

  float* m2() const { return m2_; }
  float* l() const { return l_; }
  float* acc() const { return acc_; }
  std::int64_t batch = 0, heads = 0, rows = 0, head_dim = 0;
  std::int64_t num_rows() const { return batch * heads * rows; }

 private:
  float* m2_ = nullptr;
  float* l_ = nullptr;
  float* acc_ = nullptr;
};

// Fold the K/V block described by p into s, asynchronously on stream. s must
// have been made for (p.batch, p.heads_q, p.n_q, p.head_dim). p.threads and
// p.progress are ignored (the GPU needs no polling).
void update_state(const AttnParams& p, DeviceAttnState& s, Stream stream);

// o: (batch, heads, rows, head_dim) f32 on the device, may be s.acc() (in
// place); lse: (batch, heads, rows) f32 natural log on the device, or nullptr.
void finalize(DeviceAttnState& s, float* o, float* lse, Stream stream);

// reset + update_state + finalize for one whole block (o, lse on the device).
void attention_forward(const AttnParams& p, float* o, float* lse, Stream stream);

// ---- helpers for tests and benchmarks (CPU-only code needs no CUDA header) ----

// Device memory, cudaMalloc'd; freed (after a device synchronisation) on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  std::size_t size() const { return bytes_; }
  // Synchronous copies of the first `bytes` bytes (<= size()).
  void upload(const void* host, std::size_t bytes);
  void download(void* host, std::size_t bytes) const;

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

// Synchronous copy of bytes from device memory (e.g. DeviceAttnState::acc()).
void copy_to_host(void* host, const void* device, std::size_t bytes);

// Waits for the work queued on stream; throws Error(fault) if any of it failed.
void synchronize(Stream stream);

// The current device, as cudaGetDeviceProperties reports it.
struct DeviceInfo {
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  double clock_mhz = 0;  // peak SM clock
};
DeviceInfo current_device_info();

// Times attention_forward on the current device: the tensors p points to are
// on the HOST (any strides); they are copied to the device once, then
// `warmup` untimed and `reps` timed runs follow, each timed with CUDA events.
// Returns the seconds of each timed run.
std::vector<double> time_attention_forward(const AttnParams& host_p, int warmup, int reps);

}  // namespace ringattn::cuda
