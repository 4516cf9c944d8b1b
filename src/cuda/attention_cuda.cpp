// Host side of the CUDA attention API (attention_cuda.hpp): the device
// state, validation, the KernelParams filled once per call, attention_forward
// with stream-ordered temporaries, and the helpers tests and benchmarks use.
// Host compiler (C++20, like the rest of the library); the device code is in
// attention_cuda.cu and the attention_kernel_d<D>.cu translation units.
#include "cuda/attention_cuda.hpp"

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "cuda/launch_shape.hpp"
#include "kernel/params.hpp"

namespace ringattn::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kNegInf = -__builtin_huge_valf();

void reset_state(float* m2, float* l, float* acc, std::int64_t rows, std::int64_t head_dim,
                 Stream stream) {
  if (rows == 0) return;
  launch_fill(m2, rows, kNegInf, stream);
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  RA_CUDA_CHECK(cudaMemsetAsync(l, 0, static_cast<std::size_t>(rows) * sizeof(float), st));
  RA_CUDA_CHECK(
      cudaMemsetAsync(acc, 0, static_cast<std::size_t>(rows * head_dim) * sizeof(float), st));
}

DeviceLimits current_limits() {
  int dev = 0;
  RA_CUDA_CHECK(cudaGetDevice(&dev));
  DeviceLimits d;
  int optin = 0;
  RA_CUDA_CHECK(cudaDeviceGetAttribute(&d.cc_major, cudaDevAttrComputeCapabilityMajor, dev));
  RA_CUDA_CHECK(cudaDeviceGetAttribute(&d.cc_minor, cudaDevAttrComputeCapabilityMinor, dev));
  RA_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  d.smem_per_block_optin = static_cast<std::size_t>(optin);
  return d;
}

// Fold p into the state (m2, l, acc) on the device.
void update_rows(const AttnParams& p, float* m2, float* l, float* acc, Stream stream) {
  if (p.n_q == 0 || p.n_kv == 0) return;
  const LaunchShape s = plan_launch(p, current_limits());
  KernelParams k{};
  k.q = p.q.data;
  k.k = p.k.data;
  k.v = p.v.data;
  k.q_batch_stride = p.q.batch_stride;
  k.q_head_stride = p.q.head_stride;
  k.q_row_stride = p.q.row_stride;
  k.k_batch_stride = p.k.batch_stride;
  k.k_head_stride = p.k.head_stride;
  k.k_row_stride = p.k.row_stride;
  k.v_batch_stride = p.v.batch_stride;
  k.v_head_stride = p.v.head_stride;
  k.v_row_stride = p.v.row_stride;
  k.m2 = m2;
  k.l = l;
  k.acc = acc;
  k.heads_q = p.heads_q;
  k.n_q = p.n_q;
  k.n_kv = p.n_kv;
  k.group = p.heads_q / p.heads_kv;
  k.head_dim = static_cast<int>(p.head_dim);
  k.scale_log2 = p.effective_scale() * kLog2e;
  RA_CHECK(!p.window.bounded(), usage, "the CUDA kernel has no attention windows yet (--window ",
           p.window.text(), "): use --backend cpu");
  k.causal = p.causal;
  k.vector_loads = s.vector_loads;
  k.q_tiles = s.q_tiles;
  k.k_tiles = s.k_tiles;
  k.q_pos = encode_positions(p.q_pos, p.n_q);
  k.k_pos = encode_positions(p.k_pos, p.n_kv);
  launch_attention_kernel(k, s, stream);
}

}  // namespace

// ---- DeviceAttnState -------------------------------------------------------------------

DeviceAttnState::DeviceAttnState(std::int64_t b, std::int64_t h, std::int64_t r, std::int64_t d)
    : batch(b), heads(h), rows(r), head_dim(d) {
  RA_CHECK(b >= 0 && h >= 0 && r >= 0 && d >= 0, internal, "negative state shape");
  const std::size_t n = static_cast<std::size_t>(num_rows());
  if (n == 0) return;
  try {
    RA_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&m2_), n * sizeof(float)));
    RA_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&l_), n * sizeof(float)));
    RA_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&acc_),
                             n * static_cast<std::size_t>(d) * sizeof(float)));
  } catch (...) {
    cudaFree(m2_);
    cudaFree(l_);
    m2_ = l_ = nullptr;
    throw;
  }
}

DeviceAttnState::~DeviceAttnState() {
  // cudaFree waits for the device, so pending kernels finish first. Errors
  // here cannot be thrown; the next checked call reports them.
  cudaFree(m2_);
  cudaFree(l_);
  cudaFree(acc_);
}

// The moved-from state is left empty (shape 0): with its old shape and null
// pointers, a later reset() or finalize() would write through null.
DeviceAttnState::DeviceAttnState(DeviceAttnState&& o) noexcept
    : batch(std::exchange(o.batch, 0)),
      heads(std::exchange(o.heads, 0)),
      rows(std::exchange(o.rows, 0)),
      head_dim(std::exchange(o.head_dim, 0)),
      m2_(std::exchange(o.m2_, nullptr)),
      l_(std::exchange(o.l_, nullptr)),
      acc_(std::exchange(o.acc_, nullptr)) {}

DeviceAttnState& DeviceAttnState::operator=(DeviceAttnState&& o) noexcept {
  if (this != &o) {
    cudaFree(m2_);
    cudaFree(l_);
    cudaFree(acc_);
    batch = std::exchange(o.batch, 0);
    heads = std::exchange(o.heads, 0);
    rows = std::exchange(o.rows, 0);
    head_dim = std::exchange(o.head_dim, 0);
    m2_ = std::exchange(o.m2_, nullptr);
    l_ = std::exchange(o.l_, nullptr);
    acc_ = std::exchange(o.acc_, nullptr);
  }
  return *this;
}

void DeviceAttnState::reset(Stream stream) {
  reset_state(m2_, l_, acc_, num_rows(), head_dim, stream);
}

// ---- the kernel API ----------------------------------------------------------------------

void update_state(const AttnParams& p, DeviceAttnState& s, Stream stream) {
  p.validate();
  RA_CHECK(
      s.batch == p.batch && s.heads == p.heads_q && s.rows == p.n_q && s.head_dim == p.head_dim,
      internal, "device state shape (", s.batch, ", ", s.heads, ", ", s.rows, ", ", s.head_dim,
      ") does not match the block (", p.batch, ", ", p.heads_q, ", ", p.n_q, ", ", p.head_dim, ")");
  update_rows(p, s.m2(), s.l(), s.acc(), stream);
}

void finalize(DeviceAttnState& s, float* o, float* lse, Stream stream) {
  launch_finalize(s.m2(), s.l(), s.acc(), o, lse, s.num_rows(), s.head_dim, stream);
}

void attention_forward(const AttnParams& p, float* o, float* lse, Stream stream) {
  p.validate();
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  const std::int64_t rows = p.batch * p.heads_q * p.n_q;
  if (rows == 0) return;
  // o doubles as acc; m2 and l are stream-ordered temporaries, so the call
  // stays asynchronous.
  float* m2 = nullptr;
  RA_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&m2),
                                2 * static_cast<std::size_t>(rows) * sizeof(float), st));
  float* l = m2 + rows;
  try {
    reset_state(m2, l, o, rows, p.head_dim, stream);
    update_rows(p, m2, l, o, stream);
    launch_finalize(m2, l, o, o, lse, rows, p.head_dim, stream);
  } catch (...) {
    cudaFreeAsync(m2, st);
    throw;
  }
  RA_CUDA_CHECK(cudaFreeAsync(m2, st));
}

// ---- helpers ---------------------------------------------------------------------------------

DeviceBuffer::DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
  if (bytes) RA_CUDA_CHECK(cudaMalloc(&data_, bytes));
}
DeviceBuffer::~DeviceBuffer() {
  cudaFree(data_);
}
DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    cudaFree(data_);
    data_ = std::exchange(o.data_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}
void DeviceBuffer::upload(const void* host, std::size_t bytes) {
  RA_CHECK(bytes <= bytes_, internal, "upload of ", bytes, " bytes into a ", bytes_,
           "-byte buffer");
  if (bytes) RA_CUDA_CHECK(cudaMemcpy(data_, host, bytes, cudaMemcpyHostToDevice));
}
void DeviceBuffer::download(void* host, std::size_t bytes) const {
  RA_CHECK(bytes <= bytes_, internal, "download of ", bytes, " bytes from a ", bytes_,
           "-byte buffer");
  if (bytes) RA_CUDA_CHECK(cudaMemcpy(host, data_, bytes, cudaMemcpyDeviceToHost));
}

void copy_to_host(void* host, const void* device, std::size_t bytes) {
  if (bytes) RA_CUDA_CHECK(cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost));
}

void synchronize(Stream stream) {
  RA_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}

DeviceInfo current_device_info() {
  int dev = 0;
  RA_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  RA_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  DeviceInfo d;
  d.name = prop.name;
  d.cc_major = prop.major;
  d.cc_minor = prop.minor;
  d.sm_count = prop.multiProcessorCount;
  int khz = 0;  // cudaDeviceProp::clockRate is gone in CUDA 13; the attribute stays
  if (cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, dev) == cudaSuccess)
    d.clock_mhz = khz / 1000.0;
  else
    cudaGetLastError();
  return d;
}

std::vector<double> time_attention_forward(const AttnParams& host_p, int warmup, int reps) {
  host_p.validate();
  const std::size_t es = dtype_size(host_p.dtype);
  // Elements from a tensor's first to one past its last element.
  auto extent = [&](const TensorRef& t, std::int64_t heads, std::int64_t n) -> std::size_t {
    if (n == 0) return 0;
    return static_cast<std::size_t>((host_p.batch - 1) * t.batch_stride +
                                    (heads - 1) * t.head_stride + (n - 1) * t.row_stride +
                                    host_p.head_dim);
  };
  const std::size_t qe = extent(host_p.q, host_p.heads_q, host_p.n_q);
  const std::size_t ke = extent(host_p.k, host_p.heads_kv, host_p.n_kv);
  const std::size_t ve = extent(host_p.v, host_p.heads_kv, host_p.n_kv);
  DeviceBuffer q(qe * es), k(ke * es), v(ve * es);
  q.upload(host_p.q.data, qe * es);
  k.upload(host_p.k.data, ke * es);
  v.upload(host_p.v.data, ve * es);
  const std::size_t rows = static_cast<std::size_t>(host_p.batch * host_p.heads_q * host_p.n_q);
  DeviceBuffer o(rows * static_cast<std::size_t>(host_p.head_dim) * sizeof(float)),
      lse(rows * sizeof(float));
  AttnParams p = host_p;
  p.q.data = q.data();
  p.k.data = k.data();
  p.v.data = v.data();

  cudaStream_t stream = nullptr;
  RA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t start = nullptr, stop = nullptr;
  std::vector<double> secs;
  try {
    RA_CUDA_CHECK(cudaEventCreate(&start));
    RA_CUDA_CHECK(cudaEventCreate(&stop));
    for (int i = 0; i < warmup; ++i)
      attention_forward(p, static_cast<float*>(o.data()), static_cast<float*>(lse.data()), stream);
    for (int i = 0; i < reps; ++i) {
      RA_CUDA_CHECK(cudaEventRecord(start, stream));
      attention_forward(p, static_cast<float*>(o.data()), static_cast<float*>(lse.data()), stream);
      RA_CUDA_CHECK(cudaEventRecord(stop, stream));
      RA_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0;
      RA_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      secs.push_back(ms * 1e-3);
    }
  } catch (...) {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cudaStreamDestroy(stream);
    throw;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  RA_CUDA_CHECK(cudaStreamDestroy(stream));
  return secs;
}

}  // namespace ringattn::cuda
