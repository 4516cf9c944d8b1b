// Transport over NCCL between device buffers (comm/transport.hpp): one ring
// hop is a grouped ncclSend to rank+1 and ncclRecv from rank-1 (STYLE 9) on
// a stream of its own, so the hop overlaps the kernel on the compute stream
// the transport is bound to. Events, not host synchronisation, order the
// two streams:
//
//   start(send, recv)  the hop runs after the work enqueued on compute so far
//                      (the block to send is complete, the receive buffer no
//                      longer read), on stream_;
//   progress()         polls it from the host;
//   wait()             polls until it completed; work enqueued on compute
//                      from then on sees the received block.
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

namespace ringattn {

class NcclTransport final : public Transport {
 public:
  // Collective over comm: rank 0 creates the NCCL unique id and broadcasts
  // it over comm; every rank joins on its current CUDA device (one device per
  // rank: NCCL refuses two ranks of a communicator on one GPU; check with
  // require_gpu_per_rank first). timeout_s: the longest init or one hop may
  // take; 0 = no limit. compute: the stream the hops are ordered with (it
  // must outlive the transport).
  NcclTransport(MPI_Comm comm, double timeout_s, cudaStream_t compute);
  ~NcclTransport() override;
  NcclTransport(const NcclTransport&) = delete;
  NcclTransport& operator=(const NcclTransport&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // send and recv are device pointers. The hop runs after the work enqueued
  // on the compute stream so far.
  void start(const void* send, std::size_t send_bytes, void* recv, std::size_t recv_bytes) override;
  // True once the hop has completed on the device. Throws as wait() does
  // when NCCL reports an error.
  bool progress() override;
  // Blocks (polling) until the hop completed, or aborts and throws; work
  // enqueued on the compute stream afterwards waits for the hop.
  void wait() override;

 private:
  // Waits while the communicator's state is ncclInProgress (init); false
  // when it still is timeout_s after since. Aborts and throws on an error.
  bool settle(const Timer& since, const char* what);
  [[noreturn]] void abort_and_throw(const std::string& why);
  std::string hop_name() const;

  ncclComm_t comm_ = nullptr;
  cudaStream_t compute_ = nullptr;  // the ring's, not ours
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;  // recorded on the compute stream
  cudaEvent_t done_ = nullptr;   // recorded on stream_ after a hop
  int rank_ = 0, size_ = 1;
  double timeout_s_ = 0;
  bool in_flight_ = false;  // a hop was started and not waited for
  bool enqueued_ = false;   // ... and NCCL finished enqueuing it (done_ recorded)
  bool aborted_ = false;
};

// Collective over comm: returns on every rank when no two ranks of comm on a
// node use the same physical GPU (NCCL needs a GPU per rank); otherwise every
// rank throws the same Error(usage) naming a host and the way out (the staged
// MPI transport). device: this rank's current CUDA device.
void require_gpu_per_rank(MPI_Comm comm, int device);

}  // namespace ringattn
