// One ring hop: send a buffer to the next rank while receiving another from
// the previous one. The ring starts a hop, computes, polls progress() from
// inside the kernel, then waits. Implementations: MPI (here), NCCL (cuda).
#pragma once

#include <cstddef>

namespace ringattn {

class Transport {
 public:
  virtual ~Transport() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Post the hop: send_bytes from send to rank+1, recv_bytes into recv from
  // rank-1 (mod size). Both buffers stay untouched until wait() returns.
  virtual void start(const void* send, std::size_t send_bytes, void* recv,
                     std::size_t recv_bytes) = 0;
  // Move the transfer along without blocking; true once both halves are done.
  virtual bool progress() = 0;
  // Block until both halves are done.
  virtual void wait() = 0;
};

}  // namespace ringattn
