// The ring with the kernel on the GPU (ring.hpp): the contract of every Ring
// (home block and queries on the host, o and lse back on the host, the same
// hops in the same order on every rank, the same causal skip rule, the same
// stats), with the state and the travelling K/V blocks in device memory:
//
//   per run (one chunk): copy q and the home block to the device; reset the
//   state; the step loop of ring_loop.hpp, where the transport sends the
//   block in hand to r+1 and receives the next from r-1 into the other
//   device buffer while the compute stream folds the block in hand into the
//   state (cuda::update_state); finalize on the device, copy o and lse back.
//
// Transports (comm/): "nccl" grouped ncclSend/ncclRecv between device
// buffers, one GPU per rank; "mpi" staged through pinned host memory and
// moved by MPI, the host polling MPI while the GPU computes (for nodes
// without NCCL or with fewer GPUs than ranks).
//
// One DeviceRing per job: it picks the device (comm/device_select.hpp),
// creates the stream and the transport once, and keeps its buffers across
// runs, growing them when a chunk needs more. The home block is pinned host
// memory, so the one copy of K/V to the device runs at full speed.
//
// Defined only with the CUDA parts: make it with make_device_ring, which in a
// build without them checks its arguments, then throws Error(usage).
// Includes: mpi.h (MPI_Comm).
#pragma once

#include <mpi.h>

#include <memory>
#include <string>

#include "comm/agree.hpp"
#include "core/error.hpp"
#include "cuda/device.hpp"
#include "ring/ring.hpp"

namespace ringattn {

class DeviceRing final : public Ring {
 public:
  // Collective over comm (the arguments' check, select_cuda_device, the
  // transport). transport: "nccl" or "mpi" (anything else: Error(usage), in
  // every build). comm_timeout_s: the longest a rank waits for one hop
  // before it aborts the transfer and throws Error(fault); 0 = wait forever.
  // Call check_cuda_backend(comm) first. Outside the CUDA parts, make one
  // with make_device_ring.
  DeviceRing(MPI_Comm comm, const std::string& transport, double comm_timeout_s);
  ~DeviceRing() override;
  DeviceRing(const DeviceRing&) = delete;
  DeviceRing& operator=(const DeviceRing&) = delete;

  // In pinned host memory.
  KvBlockRef home_block(const RingLayout& layout) override;
  // opt.threads is unused; opt.poll makes the host poll the transport while
  // the GPU computes; opt.compute is passed to the kernel. Stats: compute_s
  // is the kernel's time on the GPU, wait_s the time the host waited for a
  // hop after that step's kernel finished (exposed transfer), total_s
  // includes the copies to and from the device.
  RingStats run(const RingLayout& layout, const void* q, float* lse,
                const RingOptions& opt) override;
  const float* output() const override;
  // No device backward kernel yet: Error(usage) (the job refuses
  // --backward with --backend cuda before any of this).
  RingStats run_backward(const RingLayout&, const void*, const GradInputs&,
                         const RingOptions&) override {
    RA_FAIL(usage, "the backward runs on the CPU backend only (--backend cpu)");
  }
  const float* grad_q() const override { return nullptr; }
  const float* grad_kv() const override { return nullptr; }

  const std::string& transport() const;  // "nccl" or "mpi"

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// What the constructor checks in every build before it needs a device,
// agreed over comm so every rank throws the same Error(usage).
inline void check_device_ring_arguments(MPI_Comm comm, const std::string& transport,
                                        double comm_timeout_s) {
  agree(comm, [&] {
    RA_CHECK(transport == "nccl" || transport == "mpi", usage, "--transport ", transport,
             ": the device ring moves blocks with nccl or mpi");
    RA_CHECK(comm_timeout_s >= 0, usage, "communication timeout ", comm_timeout_s, " s < 0");
  });
}

// A DeviceRing (collective, as its constructor). In a build without the CUDA
// parts: the same argument check, then every rank throws the same
// Error(usage) (check_cuda_backend says the same earlier in a job).
inline std::unique_ptr<Ring> make_device_ring(MPI_Comm comm, const std::string& transport,
                                              double comm_timeout_s) {
  if constexpr (kCudaBuilt) {
    return std::make_unique<DeviceRing>(comm, transport, comm_timeout_s);
  } else {
    check_device_ring_arguments(comm, transport, comm_timeout_s);
    // The same text on every rank (no host:rank suffix): every rank throws it.
    throw Error(ErrorClass::usage,
                std::string(kNoCudaBuild) + ": no device ring; use --backend cpu");
  }
}

}  // namespace ringattn
