// MPI ring hop between device buffers, staged through pinned host memory
// (see staged_mpi_transport.hpp).
#include "comm/staged_mpi_transport.hpp"

#include <unistd.h>

#include "core/error.hpp"
#include "core/timer.hpp"

namespace ringattn {
namespace {

void backoff(int polls) {
  if (polls > 1000) ::usleep(20);
}

}  // namespace

StagedMpiTransport::StagedMpiTransport(MPI_Comm comm, double timeout_s, cudaStream_t compute)
    : t_(comm), timeout_s_(timeout_s), compute_(compute) {
  try {
    RA_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking));
    RA_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    RA_CUDA_CHECK(cudaEventCreateWithFlags(&landed_, cudaEventDisableTiming));
  } catch (...) {
    release();
    throw;
  }
}

StagedMpiTransport::~StagedMpiTransport() {
  release();
}

void StagedMpiTransport::release() noexcept {
  if (copy_) cudaStreamSynchronize(copy_);
  if (landed_) cudaEventDestroy(landed_);
  if (ready_) cudaEventDestroy(ready_);
  if (copy_) cudaStreamDestroy(copy_);
  copy_ = nullptr;
  ready_ = landed_ = nullptr;
}

void StagedMpiTransport::reserve(std::size_t bytes) {
  send_.get(bytes);
  recv_.get(bytes);
}

void StagedMpiTransport::start(const void* send, std::size_t send_bytes, void* recv,
                               std::size_t recv_bytes) {
  // The block to send is complete and the receive buffer no longer read
  // once the compute stream reaches ready_.
  RA_CUDA_CHECK(cudaEventRecord(ready_, compute_));
  RA_CUDA_CHECK(cudaStreamWaitEvent(copy_, ready_, 0));
  RA_CUDA_CHECK(cudaMemcpyAsync(send_.data(), send, send_bytes, cudaMemcpyDeviceToHost, copy_));
  // Also drains the previous hop's copy out of recv_, so MPI may refill it.
  RA_CUDA_CHECK(cudaStreamSynchronize(copy_));
  t_.start(send_.data(), send_bytes, recv_.data(), recv_bytes);
  recv_dev_ = recv;
  recv_bytes_ = recv_bytes;
}

void StagedMpiTransport::wait() {
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
  RA_CUDA_CHECK(cudaStreamWaitEvent(compute_, landed_, 0));
}

}  // namespace ringattn
