// One ring hop, the one concept every ring moves its blocks with (STYLE 9):
// send a buffer to the next rank while receiving another from the previous
// one. The ring step loop (ring/ring_loop.hpp) starts a hop, computes,
// polls progress() meanwhile, then waits. Implementations:
//
//   MpiTransport        host buffers, MPI_Irecv + MPI_Isend (mpi_transport.hpp)
//   NcclTransport       device buffers, grouped ncclSend + ncclRecv (nccl_transport.hpp)
//   StagedMpiTransport  device buffers staged through pinned host memory and
//                       moved by MPI, for GPUs shared by ranks or nodes without
//                       NCCL (staged_mpi_transport.hpp)
//
// The device transports are bound to the stream their ring computes on:
// "before start()" and "after wait()" then mean the work enqueued on that
// stream before and after, so the host never waits for the device to order
// a hop.
#pragma once

#include <cstddef>

namespace ringattn {

class Transport {
 public:
  virtual ~Transport() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Room for hops of up to bytes each way, for transports that stage blocks
  // through buffers of their own. Only between hops.
  virtual void reserve(std::size_t bytes) { static_cast<void>(bytes); }
  // Post the hop: send_bytes from send to rank+1, recv_bytes into recv from
  // rank-1 (mod size), after what was written to send before. Both buffers
  // stay untouched by the caller until wait() returns.
  virtual void start(const void* send, std::size_t send_bytes, void* recv,
                     std::size_t recv_bytes) = 0;
  // Move the transfer along without blocking; true once both halves are done.
  virtual bool progress() = 0;
  // Block until both halves are done: what is read from recv afterwards sees
  // the received block.
  virtual void wait() = 0;
};

}  // namespace ringattn
