// The device ring (see ring_cuda.hpp): the schedule of ring/ring_attention.cpp
// (ring/ring_schedule.hpp), with the state and the K/V double buffers on the
// GPU. Host code only (CUDA runtime API, NCCL, MPI); the kernel is
// cuda/attention_cuda.hpp's.
//
// Per step the host enqueues the hop and the kernel, then waits first for the
// kernel (polling MPI meanwhile for the staged transport) and then for the
// hop. Events order the streams, so the host waits only to report each step
// (stats, progress) and to enforce the communication timeout; the cost is one
// kernel launch latency per step.
#include "cuda/ring_cuda.hpp"

#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <exception>
#include <utility>
#include <vector>

#include "comm/agree.hpp"
#include "comm/device_select.hpp"
#include "comm/mpi_transport.hpp"
#include "comm/nccl_transport.hpp"
#include "core/error.hpp"
#include "core/timer.hpp"
#include "cuda/attention_cuda.hpp"
#include "cuda/device.hpp"
#include "kernel/attention.hpp"
#include "ring/ring_schedule.hpp"

namespace ringattn::cuda {
namespace {

// Memory that only grows: the chunks of one job have nearly the same shape.
template <cudaError_t (*Alloc)(void**, std::size_t), cudaError_t (*Free)(void*)>
class GrowingBytes {
 public:
  GrowingBytes() = default;
  ~GrowingBytes() {
    if (p_) Free(p_);
  }
  GrowingBytes(const GrowingBytes&) = delete;
  GrowingBytes& operator=(const GrowingBytes&) = delete;

  // At least bytes; the old contents are lost when it grows. Call only while
  // no stream uses the memory.
  char* get(std::size_t bytes) {
    if (bytes > capacity_ || !p_) {
      if (p_) RA_CUDA_CHECK(Free(p_));
      p_ = nullptr;
      capacity_ = 0;
      RA_CUDA_CHECK(Alloc(&p_, std::max<std::size_t>(bytes, 1)));
      capacity_ = bytes;
    }
    return static_cast<char*>(p_);
  }
  char* data() const { return static_cast<char*>(p_); }

 private:
  void* p_ = nullptr;
  std::size_t capacity_ = 0;
};

cudaError_t device_alloc(void** p, std::size_t n) {
  return cudaMalloc(p, n);
}
cudaError_t pinned_alloc(void** p, std::size_t n) {
  return cudaMallocHost(p, n);
}
using DeviceBytes = GrowingBytes<device_alloc, cudaFree>;
using PinnedBytes = GrowingBytes<pinned_alloc, cudaFreeHost>;

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

// A ring hop between device buffers, whatever carries it.
class DeviceHop {
 public:
  virtual ~DeviceHop() = default;
  // Buffers for blocks of up to bytes (called between runs, streams idle).
  virtual void reserve(std::size_t bytes) = 0;
  // Start sending send (device) to rank+1 and receiving recv (device) from
  // rank-1, after the work enqueued on compute so far.
  virtual void start(cudaStream_t compute, const void* send, std::size_t send_bytes, void* recv,
                     std::size_t recv_bytes) = 0;
  // Returns once computed (an event on the compute stream) has completed,
  // moving the hop along meanwhile when poll is set.
  virtual void overlap(cudaEvent_t computed, bool poll) = 0;
  // Blocks until the hop is done; work enqueued on compute afterwards sees
  // the received block.
  virtual void finish(cudaStream_t compute) = 0;
};

// Device to device with NCCL.
class NcclHop final : public DeviceHop {
 public:
  NcclHop(MPI_Comm comm, double timeout_s) : t_(comm, timeout_s) {}
  void reserve(std::size_t) override {}
  void start(cudaStream_t compute, const void* send, std::size_t send_bytes, void* recv,
             std::size_t recv_bytes) override {
    t_.record_ready(compute);
    t_.start(send, send_bytes, recv, recv_bytes);
  }
  void overlap(cudaEvent_t computed, bool) override {
    // progress() also lets NCCL finish enqueuing the group and checks its errors.
    for (int polls = 0; !event_done(computed); ++polls) {
      t_.progress();
      backoff(polls);
    }
  }
  void finish(cudaStream_t compute) override {
    t_.wait();
    t_.make_stream_wait(compute);
  }

 private:
  NcclTransport t_;
};

// The fallback for nodes without NCCL (or with fewer GPUs than ranks): the
// block goes device -> pinned host -> MPI -> pinned host -> device.
class StagedMpiHop final : public DeviceHop {
 public:
  StagedMpiHop(MPI_Comm comm, double timeout_s) : t_(comm), timeout_s_(timeout_s) {
    try {
      RA_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking));
      RA_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
      RA_CUDA_CHECK(cudaEventCreateWithFlags(&landed_, cudaEventDisableTiming));
    } catch (...) {
      release();
      throw;
    }
  }
  ~StagedMpiHop() override { release(); }
  StagedMpiHop(const StagedMpiHop&) = delete;
  StagedMpiHop& operator=(const StagedMpiHop&) = delete;

  void reserve(std::size_t bytes) override {
    send_.get(bytes);
    recv_.get(bytes);
  }
  void start(cudaStream_t compute, const void* send, std::size_t send_bytes, void* recv,
             std::size_t recv_bytes) override {
    // The block to send is complete and the receive buffer no longer read
    // once the compute stream reaches ready_.
    RA_CUDA_CHECK(cudaEventRecord(ready_, compute));
    RA_CUDA_CHECK(cudaStreamWaitEvent(copy_, ready_, 0));
    RA_CUDA_CHECK(cudaMemcpyAsync(send_.data(), send, send_bytes, cudaMemcpyDeviceToHost, copy_));
    // Also drains the previous hop's copy out of recv_, so MPI may refill it.
    RA_CUDA_CHECK(cudaStreamSynchronize(copy_));
    t_.start(send_.data(), send_bytes, recv_.data(), recv_bytes);
    recv_dev_ = recv;
    recv_bytes_ = recv_bytes;
  }
  void overlap(cudaEvent_t computed, bool poll) override {
    if (!poll) {
      RA_CUDA_CHECK(cudaEventSynchronize(computed));
      return;
    }
    // Open MPI moves a large message only while the process calls into MPI.
    for (int polls = 0; !event_done(computed); ++polls) {
      t_.progress();
      backoff(polls);
    }
  }
  void finish(cudaStream_t compute) override {
    if (timeout_s_ > 0) {
      const Timer t;
      for (int polls = 0; !t_.progress(); ++polls) {
        if (t.seconds() > timeout_s_) {
          const int P = t_.size(), r = t_.rank();
          RA_CHECK(false, fault, "rank ", r, ": MPI transfer from rank ", (r + P - 1) % P,
                   " / to rank ", (r + 1) % P, " did not complete within ", timeout_s_, " s");
        }
        backoff(polls);
      }
    } else {
      t_.wait();
    }
    RA_CUDA_CHECK(
        cudaMemcpyAsync(recv_dev_, recv_.data(), recv_bytes_, cudaMemcpyHostToDevice, copy_));
    RA_CUDA_CHECK(cudaEventRecord(landed_, copy_));
    RA_CUDA_CHECK(cudaStreamWaitEvent(compute, landed_, 0));
  }

 private:
  void release() noexcept {
    if (copy_) cudaStreamSynchronize(copy_);
    if (landed_) cudaEventDestroy(landed_);
    if (ready_) cudaEventDestroy(ready_);
    if (copy_) cudaStreamDestroy(copy_);
    copy_ = nullptr;
    ready_ = landed_ = nullptr;
  }

  // Declared before t_: MpiTransport's destructor cancels a hop still in
  // flight before the pinned buffers it points into are freed.
  PinnedBytes send_, recv_;
  MpiTransport t_;
  double timeout_s_ = 0;
  cudaStream_t copy_ = nullptr;
  cudaEvent_t ready_ = nullptr, landed_ = nullptr;
  void* recv_dev_ = nullptr;
  std::size_t recv_bytes_ = 0;
};

// How many ranks of comm on this node use the same physical GPU as this one
// (compared by UUID, so per-rank CUDA_VISIBLE_DEVICES masks count right).
// Collective over comm; throws nothing before its collectives.
int ranks_on_my_gpu(MPI_Comm comm, int device) {
  int rank = 0;
  RA_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  std::array<unsigned char, 16> mine{};
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) == cudaSuccess) {
    std::memcpy(mine.data(), prop.uuid.bytes, mine.size());
  } else {
    cudaGetLastError();
    std::memcpy(mine.data(), &rank, sizeof rank);  // unknown: count as its own GPU
    mine[15] = 0xff;
  }
  MPI_Comm node = MPI_COMM_NULL;
  RA_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
  int n = 1;
  MPI_Comm_size(node, &n);
  std::vector<unsigned char> all(mine.size() * static_cast<std::size_t>(n));
  const int rc = MPI_Allgather(mine.data(), static_cast<int>(mine.size()), MPI_BYTE, all.data(),
                               static_cast<int>(mine.size()), MPI_BYTE, node);
  MPI_Comm_free(&node);
  RA_MPI_CHECK(rc);
  int same = 0;
  for (int i = 0; i < n; ++i)
    same += std::memcmp(all.data() + mine.size() * static_cast<std::size_t>(i), mine.data(),
                        mine.size()) == 0;
  return same;
}

}  // namespace

struct DeviceRing::Impl {
  int rank = 0, size = 1, device = 0;
  std::string transport;
  cudaStream_t compute = nullptr;
  cudaEvent_t begin = nullptr, end = nullptr;  // around each kernel (timing)
  DeviceBytes q;                               // (B, HQ, nq, D) in the storage type
  DeviceBytes kv[2];                           // (2, B, HK, n, D): K then V, double buffered
  DeviceBytes lse;                             // (B, HQ, nq) f32
  DeviceAttnState state;                       // (B, HQ, nq, D) fp32; acc becomes o
  std::unique_ptr<DeviceHop> hop;

  ~Impl() {
    hop.reset();
    if (compute) cudaStreamSynchronize(compute);
    if (end) cudaEventDestroy(end);
    if (begin) cudaEventDestroy(begin);
    if (compute) cudaStreamDestroy(compute);
  }
};

DeviceRing::DeviceRing(MPI_Comm comm, const std::string& transport, double comm_timeout_s)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  RA_CHECK(transport == "nccl" || transport == "mpi", usage, "--transport ", transport,
           ": the device ring moves blocks with nccl or mpi");
  RA_CHECK(comm_timeout_s >= 0, usage, "communication timeout ", comm_timeout_s, " s < 0");
  m.transport = transport;
  RA_MPI_CHECK(MPI_Comm_rank(comm, &m.rank));
  RA_MPI_CHECK(MPI_Comm_size(comm, &m.size));
  agree(comm, [&] { m.device = select_cuda_device(comm); });
  if (transport == "nccl") {
    const int sharing = ranks_on_my_gpu(comm, m.device);
    agree(comm, [&] {
      if (sharing <= 1) return;
      char host[256] = "?";
      gethostname(host, sizeof host - 1);
      throw Error(ErrorClass::usage,
                  detail::concat("--transport nccl: ", sharing, " ranks on host ", host,
                                 " share one GPU, but NCCL needs a GPU per rank; use "
                                 "--transport mpi to share GPUs"));
    });
  }
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
      m.hop = std::make_unique<NcclHop>(comm, comm_timeout_s);
    else
      m.hop = std::make_unique<StagedMpiHop>(comm, comm_timeout_s);
  } catch (...) {
    failed = std::current_exception();
  }
  agree(comm, [&] {
    if (failed) std::rethrow_exception(failed);
  });
}

DeviceRing::~DeviceRing() = default;

int DeviceRing::rank() const {
  return impl_->rank;
}
int DeviceRing::size() const {
  return impl_->size;
}
int DeviceRing::device() const {
  return impl_->device;
}
const std::string& DeviceRing::transport() const {
  return impl_->transport;
}

RingStats DeviceRing::run(const Partition& q_part, const Partition& kv_part,
                          const RingShards& host_shards, float* o_host, float* lse_host,
                          const RingOptions& opt) {
  Impl& m = *impl_;
  const int P = m.size, r = m.rank;
  RA_CHECK(q_part.ranks() == P && kv_part.ranks() == P, usage, "partitions for ", q_part.ranks(),
           "/", kv_part.ranks(), " ranks used on a ring of ", P);
  const RingShards& sh = host_shards;
  const std::int64_t nq = q_part.local_size(r);
  const std::int64_t B = sh.batch, HQ = sh.heads_q, HK = sh.heads_kv, D = sh.head_dim;
  const std::size_t es = dtype_size(sh.dtype);

  Timer total;
  RingStats stats;
  RA_CUDA_CHECK(cudaSetDevice(m.device));

  // The previous run's work is complete (it ended in a synchronisation), so
  // the buffers may grow here.
  const std::size_t q_bytes = static_cast<std::size_t>(B * HQ * nq * D) * es;
  const std::size_t capacity = 2ull * B * HK * kv_part.max_local_size() * D * es;
  char* const q = m.q.get(q_bytes);
  char* cur = m.kv[0].get(capacity);
  char* next = m.kv[1].get(capacity);
  float* const lse =
      lse_host ? reinterpret_cast<float*>(m.lse.get(static_cast<std::size_t>(B * HQ * nq) * 4))
               : nullptr;
  m.hop->reserve(capacity);
  if (m.state.batch != B || m.state.heads != HQ || m.state.rows != nq || m.state.head_dim != D)
    m.state = DeviceAttnState(B, HQ, nq, D);

  RA_CUDA_CHECK(cudaMemcpyAsync(q, sh.q, q_bytes, cudaMemcpyHostToDevice, m.compute));
  {
    const std::size_t half = ring_block_bytes(kv_part, r, sh) / 2;
    RA_CUDA_CHECK(cudaMemcpyAsync(cur, sh.k, half, cudaMemcpyHostToDevice, m.compute));
    RA_CUDA_CHECK(cudaMemcpyAsync(cur + half, sh.v, half, cudaMemcpyHostToDevice, m.compute));
  }
  m.state.reset(m.compute);

  const Positions q_pos = q_part.positions(r);
  const auto [q_lo, q_hi] = position_range(q_pos);

  for (int s = 0; s < P; ++s) {
    RingStepStats st;
    st.source = ring_step_source(r, s, P);
    const int incoming = ring_step_incoming(r, s, P);
    const bool hop = s + 1 < P;
    if (hop) {
      st.bytes_sent = ring_block_bytes(kv_part, st.source, sh);
      m.hop->start(m.compute, cur, st.bytes_sent, next, ring_block_bytes(kv_part, incoming, sh));
    }

    const AttnParams p = ring_step_params(sh, q, cur, nq, q_pos, kv_part, st.source, opt);
    st.skipped = ring_step_skipped(q_lo, q_hi, p.k_pos, opt.causal);

    RA_CUDA_CHECK(cudaEventRecord(m.begin, m.compute));
    if (!st.skipped) {
      st.flops = attention_flops(p);
      update_state(p, m.state, m.compute);
    }
    RA_CUDA_CHECK(cudaEventRecord(m.end, m.compute));
    if (hop)
      m.hop->overlap(m.end, opt.poll);
    else
      RA_CUDA_CHECK(cudaEventSynchronize(m.end));
    float ms = 0;
    RA_CUDA_CHECK(cudaEventElapsedTime(&ms, m.begin, m.end));
    st.compute_s = ms * 1e-3;
    if (hop) {
      const Timer t;
      m.hop->finish(m.compute);
      st.wait_s = t.seconds();
      std::swap(cur, next);
    }
    stats.compute_s += st.compute_s;
    stats.wait_s += st.wait_s;
    stats.flops += st.flops;
    stats.bytes_sent += st.bytes_sent;
    stats.steps.push_back(st);
    if (opt.on_step) opt.on_step(opt.on_step_arg, s + 1, P);
  }

  RA_CUDA_CHECK(cudaEventRecord(m.begin, m.compute));
  finalize(m.state, m.state.acc(), lse, m.compute);  // in place: acc becomes o
  RA_CUDA_CHECK(cudaEventRecord(m.end, m.compute));
  RA_CUDA_CHECK(cudaMemcpyAsync(o_host, m.state.acc(),
                                static_cast<std::size_t>(B * HQ * nq * D) * sizeof(float),
                                cudaMemcpyDeviceToHost, m.compute));
  if (lse_host)
    RA_CUDA_CHECK(cudaMemcpyAsync(lse_host, lse, static_cast<std::size_t>(B * HQ * nq) * 4,
                                  cudaMemcpyDeviceToHost, m.compute));
  RA_CUDA_CHECK(cudaStreamSynchronize(m.compute));
  float ms = 0;
  RA_CUDA_CHECK(cudaEventElapsedTime(&ms, m.begin, m.end));
  stats.finalize_s = ms * 1e-3;
  stats.total_s = total.seconds();
  return stats;
}

}  // namespace ringattn::cuda
