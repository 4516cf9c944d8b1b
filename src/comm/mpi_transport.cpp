// MPI ring hop (see mpi_transport.hpp).
#include "comm/mpi_transport.hpp"

#include <unistd.h>

#include <algorithm>
#include <string>

#include "comm/watchdog.hpp"
#include "core/error.hpp"
#include "core/timer.hpp"

namespace ringattn {
namespace {
constexpr std::size_t kPiece = std::size_t{1} << 30;
constexpr int kTag = 0x52410;  // "RA" + hop
}  // namespace

MpiTransport::MpiTransport(MPI_Comm comm) {
  RA_MPI_CHECK(MPI_Comm_dup(comm, &comm_));
  RA_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  RA_MPI_CHECK(MPI_Comm_size(comm_, &size_));
}

MpiTransport::~MpiTransport() {
  // A hop still in flight here means an exception unwound the ring; its
  // buffers are being freed, so cancel rather than wait on a peer that may
  // be gone.
  for (MPI_Request& r : requests_)
    if (r != MPI_REQUEST_NULL) {
      MPI_Cancel(&r);
      MPI_Request_free(&r);
    }
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiTransport::start(const void* send, std::size_t send_bytes, void* recv,
                         std::size_t recv_bytes) {
  RA_CHECK(requests_.empty(), internal, "ring hop started while the previous one is in flight");
  const int next = (rank_ + 1) % size_, prev = (rank_ + size_ - 1) % size_;
  // Receives first, so the matching sends find them posted.
  posted_recvs_ = 0;
  for (std::size_t off = 0; off < recv_bytes; off += kPiece) {
    const int n = static_cast<int>(std::min(kPiece, recv_bytes - off));
    requests_.emplace_back();
    RA_MPI_CHECK(MPI_Irecv(static_cast<char*>(recv) + off, n, MPI_BYTE, prev, kTag, comm_,
                           &requests_.back()));
    ++posted_recvs_;
  }
  for (std::size_t off = 0; off < send_bytes; off += kPiece) {
    const int n = static_cast<int>(std::min(kPiece, send_bytes - off));
    requests_.emplace_back();
    RA_MPI_CHECK(MPI_Isend(static_cast<const char*>(send) + off, n, MPI_BYTE, next, kTag, comm_,
                           &requests_.back()));
  }
}

bool MpiTransport::progress() {
  if (requests_.empty()) return true;
  int done = 0;
  RA_MPI_CHECK(MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &done,
                           MPI_STATUSES_IGNORE));
  if (done) requests_.clear();
  return done != 0;
}

void MpiTransport::wait() {
  if (requests_.empty()) return;
  const double limit = comm_timeout();
  if (limit <= 0) {
    RA_MPI_CHECK(
        MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE));
    requests_.clear();
    return;
  }
  // Poll against the deadline: after it, name the halves still open.
  Timer t;
  for (int polls = 0;; ++polls) {
    if (progress()) return;
    if (t.seconds() > limit) break;
    if (polls > 1000) ::usleep(50);  // exposed wait anyway; spare the core a little
  }
  bool recv_open = false, send_open = false;
  for (std::size_t i = 0; i < requests_.size(); ++i) {
    int done = 0;
    MPI_Test(&requests_[i], &done, MPI_STATUS_IGNORE);
    if (!done) (i < posted_recvs_ ? recv_open : send_open) = true;
  }
  const int next = (rank_ + 1) % size_, prev = (rank_ + size_ - 1) % size_;
  std::string what = "ring hop:";
  if (recv_open) what += " receive from rank " + std::to_string(prev);
  if (recv_open && send_open) what += " and";
  if (send_open) what += " send to rank " + std::to_string(next);
  comm_timed_out(what);
}

}  // namespace ringattn
