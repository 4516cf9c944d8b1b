// Transport over NCCL between device buffers (DESIGN.md, cuda layer): one
// ring hop is a grouped ncclSend to rank+1 and ncclRecv from rank-1 (STYLE 9)
// on a stream of its own, so the hop overlaps the kernel on the compute
// stream. Events, not host synchronisation, order the two streams:
//
//   record_ready(compute)     the next hop starts after the work enqueued on
//                             compute so far (the block to send is complete,
//                             the receive buffer is no longer read);
//   start(send, recv)         enqueue the hop on stream();
//   progress() / wait()       poll the hop from the host;
//   make_stream_wait(compute) work enqueued on compute from now on sees the
//                             received block.
//
// The communicator is non-blocking (ncclConfig_t::blocking = 0), so no NCCL
// call can stall the host: wait() polls ncclCommGetAsyncError and an event
// on the comm stream, and when NCCL reports an error or the hop outlasts the
// timeout it aborts the communicator (ncclCommAbort, never a destroy that
// would wait on a dead peer) and throws Error(fault) naming both peers.
//
// Built only with CUDA and NCCL. Includes: cuda_runtime.h, nccl.h, mpi.h.
#pragma once

#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <cstddef>
#include <string>

#include "comm/transport.hpp"
#include "core/timer.hpp"

namespace ringattn::cuda {

class NcclTransport final : public Transport {
 public:
  // Collective over comm: rank 0 creates the NCCL unique id and broadcasts
  // it over comm; every rank joins on its current CUDA device (one device per
  // rank: NCCL refuses two ranks of a communicator on one GPU). timeout_s:
  // the longest init or one hop may take; 0 = no limit.
  NcclTransport(MPI_Comm comm, double timeout_s);
  ~NcclTransport() override;
  NcclTransport(const NcclTransport&) = delete;
  NcclTransport& operator=(const NcclTransport&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // send and recv are device pointers. The hop runs on stream() after the
  // work that the last record_ready() captured.
  void start(const void* send, std::size_t send_bytes, void* recv, std::size_t recv_bytes) override;
  // True once the hop has completed on the device. Throws as wait() does
  // when NCCL reports an error.
  bool progress() override;
  // Blocks (polling) until the hop completed, or aborts and throws.
  void wait() override;

  // The next start() waits for the work enqueued on compute so far.
  void record_ready(cudaStream_t compute);
  // Work enqueued on compute after this call waits for the last hop.
  void make_stream_wait(cudaStream_t compute);

  cudaStream_t stream() const { return stream_; }
  bool aborted() const { return aborted_; }

 private:
  // Waits while the communicator's state is ncclInProgress (init); false
  // when it still is timeout_s after since. Aborts and throws on an error.
  bool settle(const Timer& since, const char* what);
  [[noreturn]] void abort_and_throw(const std::string& why);
  std::string hop_name() const;

  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;  // recorded on the compute stream
  cudaEvent_t done_ = nullptr;   // recorded on stream_ after a hop
  int rank_ = 0, size_ = 1;
  double timeout_s_ = 0;
  bool in_flight_ = false;  // a hop was started and not waited for
  bool enqueued_ = false;   // ... and NCCL finished enqueuing it (done_ recorded)
  bool aborted_ = false;
};

}  // namespace ringattn::cuda
