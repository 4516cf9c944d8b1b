// Ring attention with the kernel on the GPU (DESIGN.md, cuda layer): the
// contract of ring/ring_attention.hpp (host shards in, o and lse on the host
// out, the same hops in the same order on every rank, the same causal skip
// rule, the same stats), with the state and the travelling K/V blocks in
// device memory:
//
//   per run (one chunk): copy q, k, v to the device; reset the state;
//   step s = 0 .. P-1: the block in hand came from rank (r - s) mod P;
//     the transport sends it to r+1 and receives the next block from r-1
//     into the other device buffer, on its own stream, while the compute
//     stream folds the block in hand into the state (cuda::update_state);
//     events order the hop after the compute that last read the receive
//     buffer, and the next fold after the receive;
//   finalize on the device, copy o and lse back.
//
// Transports:
//   "nccl"  grouped ncclSend/ncclRecv between device buffers (one GPU per
//           rank: NCCL refuses two ranks of a communicator on one GPU).
//   "mpi"   the fallback for nodes without NCCL or with fewer GPUs than
//           ranks: each block is staged through pinned host memory and moved
//           by MpiTransport, the host polling MPI while the GPU computes.
//
// One DeviceRing per job: it picks the device (device_select.hpp), creates
// the streams and the NCCL communicator once, and keeps its device buffers
// across runs, growing them when a chunk needs more.
//
// Declared whether or not the CUDA parts are built: without them the
// constructor throws Error(usage). Includes: mpi.h (MPI_Comm).
#pragma once

#include <mpi.h>

#include <memory>
#include <string>

#include "ring/partition.hpp"
#include "ring/ring_attention.hpp"

namespace ringattn::cuda {

class DeviceRing {
 public:
  // Collective over comm (select_cuda_device, the NCCL communicator). transport:
  // "nccl" or "mpi" (anything else: Error(usage)). comm_timeout_s: the longest a
  // rank waits for one hop before it aborts the transfer and throws
  // Error(fault); 0 = wait forever. Call check_cuda_backend(comm) first.
  DeviceRing(MPI_Comm comm, const std::string& transport, double comm_timeout_s);
  ~DeviceRing();
  DeviceRing(const DeviceRing&) = delete;
  DeviceRing& operator=(const DeviceRing&) = delete;

  // ring_attention (ring/ring_attention.hpp) on the GPU. host_shards point to
  // host memory; o_host: (batch, heads_q, q_part.local_size(rank), head_dim)
  // f32; lse_host: (batch, heads_q, local q rows) f32 natural log, or nullptr.
  // opt.threads is unused; opt.poll makes the host poll the MPI transport
  // while the GPU computes; opt.compute is passed to the kernel. Stats:
  // compute_s is the kernel's time on the GPU, wait_s the time the host
  // waited for a hop after that step's kernel finished (exposed transfer),
  // total_s includes the copies to and from the device. Collective over the
  // ring: every rank calls run() the same number of times.
  RingStats run(const Partition& q_part, const Partition& kv_part, const RingShards& host_shards,
                float* o_host, float* lse_host, const RingOptions& opt);

  int rank() const;
  int size() const;
  int device() const;                    // the CUDA device this rank uses
  const std::string& transport() const;  // "nccl" or "mpi"

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ringattn::cuda
