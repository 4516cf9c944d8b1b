// Transport over MPI point-to-point: MPI_Irecv from the previous rank and
// MPI_Isend to the next on a private duplicate of the communicator (so no
// other traffic can match our tags), split into pieces of at most 1 GiB
// (MPI counts are int). wait() honours the communication watchdog's limit
// (comm/watchdog.hpp): past it, the job ends naming the peer not heard from.
#pragma once

#include <mpi.h>

#include <vector>

#include "comm/transport.hpp"

namespace ringattn {

class MpiTransport final : public Transport {
 public:
  explicit MpiTransport(MPI_Comm comm);
  ~MpiTransport() override;
  MpiTransport(const MpiTransport&) = delete;
  MpiTransport& operator=(const MpiTransport&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void start(const void* send, std::size_t send_bytes, void* recv, std::size_t recv_bytes) override;
  bool progress() override;
  void wait() override;

  MPI_Comm comm() const { return comm_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::vector<MPI_Request> requests_;  // receives first, then sends
  std::size_t posted_recvs_ = 0;
};

}  // namespace ringattn
