// The device ring (see device_ring.hpp): its backend for the step loop of
// ring_loop.hpp, and the device buffers it keeps from run to run. Host code
// only (CUDA runtime API, MPI); the kernel is cuda/attention_cuda.hpp's, the
// transports are comm/'s.
//
// Per step the loop starts the hop and the backend enqueues the kernel, then
// waits for the kernel (polling the transport meanwhile) and the loop waits
// for the hop. Events order the streams, so the host waits only to report
// each step (stats, progress) and to enforce the communication timeout; the
// cost is one kernel launch latency per step.
#include "ring/device_ring.hpp"

#include <cuda_runtime.h>
#include <unistd.h>

#include <cstdint>
#include <exception>
#include <optional>

#include "comm/agree.hpp"
#include "comm/device_select.hpp"
#include "comm/nccl_transport.hpp"
#include "comm/staged_mpi_transport.hpp"
#include "core/aligned_buffer.hpp"
#include "core/error.hpp"
#include "cuda/attention_cuda.hpp"
#include "cuda/device_memory.hpp"
#include "ring/ring_loop.hpp"

namespace ringattn {
namespace {

void backoff(int polls) {
  if (polls > 1000) ::usleep(20);
}

// True once the work before event has completed. A query that finds it still
// pending returns cudaErrorNotReady, which the runtime may also keep as this
// thread's last error: cleared here, or the next kernel launch's
// cudaGetLastError() check would throw "device not ready" mid-ring.
bool event_done(cudaEvent_t event) {
  const cudaError_t q = cudaEventQuery(event);
  if (q == cudaErrorNotReady) {
    cudaGetLastError();
    return false;
  }
  RA_CUDA_CHECK(q);
  return true;
}

// What a DeviceRing holds from run to run.
struct DeviceResources {
  int rank = 0, size = 1, device = 0;
  std::string transport;
  cudaStream_t compute = nullptr;
  cudaEvent_t begin = nullptr, end = nullptr;  // around each kernel (timing)
  cuda::DeviceBytes q;                         // (B, HQ, nq, D) in the storage type
  cuda::DeviceBytes kv[2];                     // the largest block each: K then V (KvBlock)
  cuda::PinnedBytes home;                      // this rank's block, where the caller writes it
  cuda::DeviceBytes lse;                       // (B, HQ, nq) f32
  cuda::DeviceAttnState state;                 // (B, HQ, nq, D) fp32; acc becomes o
  AlignedBuffer<float> o;                      // (B, HQ, nq, D) f32 on the host: output()
  std::unique_ptr<Transport> hop;              // ordered with compute
  std::optional<RingLayout> prepared;          // the layout home_block() sized for

  DeviceResources() = default;
  DeviceResources(const DeviceResources&) = delete;
  DeviceResources& operator=(const DeviceResources&) = delete;
  ~DeviceResources() {
    hop.reset();  // bound to compute: goes first
    if (compute) cudaStreamSynchronize(compute);
    if (end) cudaEventDestroy(end);
    if (begin) cudaEventDestroy(begin);
    if (compute) cudaStreamDestroy(compute);
  }
};

// The CUDA kernel on the compute stream, device buffers, a device transport.
class DeviceBackend {
 public:
  DeviceBackend(DeviceResources& m, const RingLayout& layout, const void* q_host, float* lse_host)
      : m_(m), q_host_(q_host), lse_host_(lse_host), home_(layout.block(m.rank)) {
    rows_ = layout.kv.batch * layout.heads_q * layout.q_part.local_size(m.rank);
    q_bytes_ = static_cast<std::size_t>(rows_ * layout.kv.head_dim) * dtype_size(layout.kv.dtype);
    o_floats_ = static_cast<std::size_t>(rows_ * layout.kv.head_dim);
  }

  Transport& transport() { return *m_.hop; }
  char* block(int i) { return m_.kv[i].data(); }
  const void* queries() { return m_.q.data(); }

  void begin() {
    RA_CUDA_CHECK(cudaSetDevice(m_.device));
    RA_CUDA_CHECK(
        cudaMemcpyAsync(m_.q.data(), q_host_, q_bytes_, cudaMemcpyHostToDevice, m_.compute));
    // The home block has the device blocks' layout: one copy, K and V at once.
    RA_CUDA_CHECK(cudaMemcpyAsync(m_.kv[0].data(), m_.home.data(), home_.bytes(),
                                  cudaMemcpyHostToDevice, m_.compute));
    m_.state.reset(m_.compute);
  }

  double fold(AttnParams* p, bool poll) {
    RA_CUDA_CHECK(cudaEventRecord(m_.begin, m_.compute));
    if (p) cuda::update_state(*p, m_.state, m_.compute);
    RA_CUDA_CHECK(cudaEventRecord(m_.end, m_.compute));
    if (poll) {
      // The staged transport moves only while MPI is polled; NCCL's
      // progress() also notes when the group is enqueued and checks errors.
      for (int polls = 0; !event_done(m_.end); ++polls) {
        m_.hop->progress();
        backoff(polls);
      }
    } else {
      RA_CUDA_CHECK(cudaEventSynchronize(m_.end));
    }
    return elapsed_s();
  }

  double finalize() {
    float* const lse = lse_host_ ? reinterpret_cast<float*>(m_.lse.data()) : nullptr;
    RA_CUDA_CHECK(cudaEventRecord(m_.begin, m_.compute));
    cuda::finalize(m_.state, m_.state.acc(), lse, m_.compute);  // in place: acc becomes o
    RA_CUDA_CHECK(cudaEventRecord(m_.end, m_.compute));
    RA_CUDA_CHECK(cudaMemcpyAsync(m_.o.data(), m_.state.acc(), o_floats_ * sizeof(float),
                                  cudaMemcpyDeviceToHost, m_.compute));
    if (lse_host_)
      RA_CUDA_CHECK(cudaMemcpyAsync(lse_host_, lse, static_cast<std::size_t>(rows_) * sizeof(float),
                                    cudaMemcpyDeviceToHost, m_.compute));
    RA_CUDA_CHECK(cudaStreamSynchronize(m_.compute));
    return elapsed_s();
  }

 private:
  double elapsed_s() const {
    float ms = 0;
    RA_CUDA_CHECK(cudaEventElapsedTime(&ms, m_.begin, m_.end));
    return ms * 1e-3;
  }

  DeviceResources& m_;
  const void* q_host_;
  float* lse_host_;
  KvBlock home_;
  std::int64_t rows_ = 0;  // B * HQ * nq
  std::size_t q_bytes_ = 0, o_floats_ = 0;
};

}  // namespace

struct DeviceRing::Impl {
  DeviceResources r;
};

DeviceRing::DeviceRing(MPI_Comm comm, const std::string& transport, double comm_timeout_s)
    : impl_(std::make_unique<Impl>()) {
  check_device_ring_arguments(comm, transport, comm_timeout_s);
  DeviceResources& m = impl_->r;
  m.transport = transport;
  RA_MPI_CHECK(MPI_Comm_rank(comm, &m.rank));
  RA_MPI_CHECK(MPI_Comm_size(comm, &m.size));
  agree(comm, [&] { m.device = select_cuda_device(comm); });
  if (transport == "nccl") require_gpu_per_rank(comm, m.device);
  agree(comm, [&] {
    RA_CUDA_CHECK(cudaStreamCreateWithFlags(&m.compute, cudaStreamNonBlocking));
    RA_CUDA_CHECK(cudaEventCreate(&m.begin));
    RA_CUDA_CHECK(cudaEventCreate(&m.end));
  });
  // The transports' constructors make their collectives first; whatever
  // fails after them on one rank is reported to all.
  std::exception_ptr failed;
  try {
    if (transport == "nccl")
      m.hop = std::make_unique<NcclTransport>(comm, comm_timeout_s, m.compute);
    else
      m.hop = std::make_unique<StagedMpiTransport>(comm, comm_timeout_s, m.compute);
  } catch (...) {
    failed = std::current_exception();
  }
  agree(comm, [&] {
    if (failed) std::rethrow_exception(failed);
  });
}

DeviceRing::~DeviceRing() = default;

const std::string& DeviceRing::transport() const {
  return impl_->r.transport;
}

const float* DeviceRing::output() const {
  return impl_->r.o.data();
}

KvBlockRef DeviceRing::home_block(const RingLayout& layout) {
  DeviceResources& m = impl_->r;
  check_ring_layout(layout, m.size);
  RA_CHECK(!layout.docs.is_packed(), usage,
           "the CUDA ring has no packed sequences (cu_seqlens) yet: use --backend cpu");
  const KvShape& kv = layout.kv;
  const std::int64_t nq = layout.q_part.local_size(m.rank), D = kv.head_dim;
  const std::int64_t rows = kv.batch * layout.heads_q * nq;
  const std::size_t capacity = KvBlock::largest(kv, layout.kv_part).bytes();
  const KvBlock home = layout.block(m.rank);
  RA_CUDA_CHECK(cudaSetDevice(m.device));
  // The previous run's work is complete (it ended in a synchronisation), so
  // the buffers may grow here.
  m.q.get(static_cast<std::size_t>(rows * D) * dtype_size(kv.dtype));
  m.kv[0].get(capacity);
  m.kv[1].get(capacity);
  m.lse.get(static_cast<std::size_t>(rows) * sizeof(float));
  m.hop->reserve(capacity);
  if (m.state.batch != kv.batch || m.state.heads != layout.heads_q || m.state.rows != nq ||
      m.state.head_dim != D)
    m.state = cuda::DeviceAttnState(kv.batch, layout.heads_q, nq, D);
  if (m.o.size() < static_cast<std::size_t>(rows * D))
    m.o.resize(static_cast<std::size_t>(rows * D));
  m.prepared = layout;
  return {m.home.get(home.bytes()), home};
}

RingStats DeviceRing::run(const RingLayout& layout, const void* q, float* lse,
                          const RingOptions& opt) {
  DeviceResources& m = impl_->r;
  // The same contract as CpuRing's, whose run leaves other ranks' blocks in
  // its home block: each run needs its own home_block() first.
  RA_CHECK(m.prepared && *m.prepared == layout, internal,
           "DeviceRing::run without home_block() for its layout");
  m.prepared.reset();
  // The state lives on the device: a run stops only at its end.
  RA_CHECK(opt.first_step == 0 && !opt.stop_after, internal,
           "DeviceRing::run cannot stop or resume inside a run");
  DeviceBackend backend(m, layout, q, lse);
  return run_ring(backend, layout, opt);
}

}  // namespace ringattn
