// Transport between device buffers over MPI (comm/transport.hpp), for nodes
// without NCCL or with fewer GPUs than ranks (NCCL refuses two ranks of a
// communicator on one GPU): each block goes device -> pinned host -> MPI ->
// pinned host -> device, on a copy stream of its own, ordered with the
// compute stream the transport is bound to:
//
//   start(send, recv)  once the compute stream has reached this point, copy
//                      send to pinned memory, then post the MPI hop;
//   progress()         moves MPI along (Open MPI moves a large message only
//                      while the process calls into it);
//   wait()             waits for MPI, then copies the received block to recv;
//                      work enqueued on compute afterwards sees it.
//
// Built only with CUDA. Includes: cuda_runtime.h, mpi.h.
#pragma once

#include <cuda_runtime.h>
#include <mpi.h>

#include <cstddef>

#include "comm/mpi_transport.hpp"
#include "comm/transport.hpp"
#include "cuda/device_memory.hpp"

namespace ringattn {

class StagedMpiTransport final : public Transport {
 public:
  // Collective over comm (its MpiTransport duplicates comm). timeout_s: the
  // longest one hop may take before wait() throws Error(fault); 0 = the comm
  // watchdog's limit (comm/watchdog.hpp). compute: the stream the hops are
  // ordered with (it must outlive the transport).
  StagedMpiTransport(MPI_Comm comm, double timeout_s, cudaStream_t compute);
  ~StagedMpiTransport() override;
  StagedMpiTransport(const StagedMpiTransport&) = delete;
  StagedMpiTransport& operator=(const StagedMpiTransport&) = delete;

  int rank() const override { return t_.rank(); }
  int size() const override { return t_.size(); }
  // Pinned buffers for hops of up to bytes.
  void reserve(std::size_t bytes) override;
  // send and recv are device pointers.
  void start(const void* send, std::size_t send_bytes, void* recv, std::size_t recv_bytes) override;
  bool progress() override { return t_.progress(); }
  void wait() override;

 private:
  void release() noexcept;

  // Declared before t_: MpiTransport's destructor cancels a hop still in
  // flight before the pinned buffers it points into are freed.
  cuda::PinnedBytes send_, recv_;
  MpiTransport t_;
  double timeout_s_ = 0;
  cudaStream_t compute_ = nullptr;  // the ring's, not ours
  cudaStream_t copy_ = nullptr;
  cudaEvent_t ready_ = nullptr, landed_ = nullptr;
  void* recv_dev_ = nullptr;
  std::size_t recv_bytes_ = 0;
};

}  // namespace ringattn
