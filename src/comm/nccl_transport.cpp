// NCCL ring hop between device buffers (see nccl_transport.hpp).
#include "comm/nccl_transport.hpp"

#include <unistd.h>

#include <array>
#include <cstring>
#include <vector>

#include "comm/agree.hpp"
#include "core/error.hpp"
#include "core/timer.hpp"

namespace ringattn {
namespace {

// Spin briefly, then sleep a little between polls: a hop waited for here is
// exposed anyway, and the core may be shared with another rank.
void backoff(int polls) {
  if (polls > 1000) ::usleep(50);
}

}  // namespace

NcclTransport::NcclTransport(MPI_Comm comm, double timeout_s, cudaStream_t compute)
    : compute_(compute), timeout_s_(timeout_s) {
  RA_MPI_CHECK(MPI_Comm_rank(comm, &rank_));
  RA_MPI_CHECK(MPI_Comm_size(comm, &size_));
  ncclUniqueId id{};
  try {
    // Everything that can fail on one rank alone comes before NCCL's init,
    // under one verdict, so no rank waits in the init for a peer that left.
    agree(comm, [&] {
      RA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
      RA_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
      RA_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
      if (rank_ == 0) RA_NCCL_CHECK(ncclGetUniqueId(&id));
    });
    RA_MPI_CHECK(MPI_Bcast(&id, static_cast<int>(sizeof id), MPI_BYTE, 0, comm));
    // Non-blocking: init and every group return at once (ncclInProgress) and
    // settle() polls them against the timeout, so a peer that never joins
    // cannot stall this rank inside NCCL.
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    const Timer since_init;
    const ncclResult_t rc = ncclCommInitRankConfig(&comm_, size_, id, rank_, &config);
    if (rc != ncclSuccess && rc != ncclInProgress)
      abort_and_throw(detail::concat("rank ", rank_, ": NCCL init of a ring of ", size_,
                                     " ranks failed: ", ncclGetErrorString(rc), " (",
                                     ncclGetLastError(comm_), ")"));
    if (!settle(since_init, "NCCL init"))
      abort_and_throw(detail::concat("rank ", rank_, ": NCCL init of a ring of ", size_,
                                     " ranks did not complete within ", timeout_s_, " s"));
  } catch (...) {
    if (comm_ && !aborted_) ncclCommAbort(comm_);
    comm_ = nullptr;
    if (done_) cudaEventDestroy(done_);
    if (ready_) cudaEventDestroy(ready_);
    if (stream_) cudaStreamDestroy(stream_);
    throw;
  }
}

NcclTransport::~NcclTransport() {
  if (comm_ && !aborted_) {
    if (in_flight_) {
      // An exception unwound the ring with a hop in flight: its buffers are
      // about to be freed and the peer may be gone. Abort, never wait.
      ncclCommAbort(comm_);
    } else {
      // Quiesce, then free; abort instead when that does not settle.
      const ncclResult_t fr = ncclCommFinalize(comm_);
      bool clean = fr == ncclSuccess || fr == ncclInProgress;
      Timer t;
      for (int polls = 0; clean; ++polls) {
        ncclResult_t st = ncclSuccess;
        if (ncclCommGetAsyncError(comm_, &st) != ncclSuccess ||
            (st != ncclSuccess && st != ncclInProgress)) {
          clean = false;
        } else if (st == ncclSuccess) {
          break;
        } else if (t.seconds() > (timeout_s_ > 0 ? timeout_s_ : 60.0)) {
          clean = false;
        }
        backoff(polls);
      }
      if (clean)
        ncclCommDestroy(comm_);
      else
        ncclCommAbort(comm_);
    }
  }
  if (done_) cudaEventDestroy(done_);
  if (ready_) cudaEventDestroy(ready_);
  if (stream_) cudaStreamDestroy(stream_);
}

std::string NcclTransport::hop_name() const {
  const int next = (rank_ + 1) % size_, prev = (rank_ + size_ - 1) % size_;
  return detail::concat("rank ", rank_, ": NCCL transfer from rank ", prev, " / to rank ", next);
}

void NcclTransport::abort_and_throw(const std::string& why) {
  if (comm_ && !aborted_) ncclCommAbort(comm_);
  aborted_ = true;
  comm_ = nullptr;
  in_flight_ = enqueued_ = false;
  detail::throw_error(ErrorClass::fault, __FILE__, __LINE__, why);
}

bool NcclTransport::settle(const Timer& since, const char* what) {
  for (int polls = 0;; ++polls) {
    ncclResult_t st = ncclSuccess;
    const ncclResult_t rc = ncclCommGetAsyncError(comm_, &st);
    if (rc != ncclSuccess) st = rc;
    if (st == ncclSuccess) return true;
    if (st != ncclInProgress)
      abort_and_throw(detail::concat("rank ", rank_, ": ", what, " failed: ",
                                     ncclGetErrorString(st), " (", ncclGetLastError(comm_), ")"));
    if (timeout_s_ > 0 && since.seconds() > timeout_s_) return false;
    backoff(polls);
  }
}

void NcclTransport::start(const void* send, std::size_t send_bytes, void* recv,
                          std::size_t recv_bytes) {
  RA_CHECK(!aborted_, fault, hop_name(), " after the communicator was aborted");
  RA_CHECK(!in_flight_, internal, "ring hop started while the previous one is in flight");
  const int next = (rank_ + 1) % size_, prev = (rank_ + size_ - 1) % size_;
  // The hop waits for what the compute stream has enqueued so far: the
  // kernel that wrote or last read either buffer.
  RA_CUDA_CHECK(cudaEventRecord(ready_, compute_));
  RA_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
  in_flight_ = true;
  enqueued_ = false;
  // One group: NCCL pairs our send with the next rank's receive and our
  // receive with the previous rank's send, whatever the order of the calls.
  ncclResult_t rc = ncclGroupStart();
  if (rc == ncclSuccess) rc = ncclSend(send, send_bytes, ncclUint8, next, comm_, stream_);
  if (rc == ncclSuccess || rc == ncclInProgress)
    rc = ncclRecv(recv, recv_bytes, ncclUint8, prev, comm_, stream_);
  const ncclResult_t end = ncclGroupEnd();
  if (rc == ncclSuccess || rc == ncclInProgress) rc = end;
  if (rc != ncclSuccess && rc != ncclInProgress)
    abort_and_throw(detail::concat(hop_name(), " failed: ", ncclGetErrorString(rc), " (",
                                   ncclGetLastError(comm_), ")"));
  progress();  // records done_ now when NCCL enqueued the group already
}

bool NcclTransport::progress() {
  if (!in_flight_) return true;
  if (!enqueued_) {
    // The group is enqueued on stream_ once the communicator leaves
    // ncclInProgress; only then may anything else go on that stream.
    ncclResult_t st = ncclSuccess;
    const ncclResult_t rc = ncclCommGetAsyncError(comm_, &st);
    if (rc != ncclSuccess) st = rc;
    if (st == ncclInProgress) return false;
    if (st != ncclSuccess)
      abort_and_throw(detail::concat(hop_name(), " failed: ", ncclGetErrorString(st), " (",
                                     ncclGetLastError(comm_), ")"));
    RA_CUDA_CHECK(cudaEventRecord(done_, stream_));
    enqueued_ = true;
  }
  const cudaError_t q = cudaEventQuery(done_);
  if (q == cudaSuccess) {
    in_flight_ = enqueued_ = false;
    return true;
  }
  if (q != cudaErrorNotReady)
    abort_and_throw(detail::concat(hop_name(), " failed on the device: ", cudaGetErrorString(q)));
  // Not done yet. The runtime may keep cudaErrorNotReady as this thread's last
  // error; clear it, or the next kernel launch's cudaGetLastError() check
  // would throw "device not ready".
  cudaGetLastError();
  // Still running: a peer's failure shows up as the communicator's error.
  ncclResult_t st = ncclSuccess;
  const ncclResult_t rc = ncclCommGetAsyncError(comm_, &st);
  if (rc != ncclSuccess) st = rc;
  if (st != ncclSuccess && st != ncclInProgress)
    abort_and_throw(detail::concat(hop_name(), " failed: ", ncclGetErrorString(st), " (",
                                   ncclGetLastError(comm_), ")"));
  return false;
}

void NcclTransport::wait() {
  Timer t;
  for (int polls = 0; !progress(); ++polls) {
    if (timeout_s_ > 0 && t.seconds() > timeout_s_)
      abort_and_throw(detail::concat(hop_name(), " did not complete within ", timeout_s_, " s"));
    backoff(polls);
  }
  // What the compute stream runs from now on reads the received block.
  RA_CUDA_CHECK(cudaStreamWaitEvent(compute_, done_, 0));
}

namespace {

// How many ranks of comm on this node use the same physical GPU as this one
// (compared by UUID, so per-rank CUDA_VISIBLE_DEVICES masks count right).
// Collective over comm; throws nothing before its collectives.
int ranks_on_my_gpu(MPI_Comm comm, int device) {
  int rank = 0;
  RA_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  std::array<unsigned char, 16> mine{};
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) == cudaSuccess) {
    std::memcpy(mine.data(), prop.uuid.bytes, mine.size());
  } else {
    cudaGetLastError();
    std::memcpy(mine.data(), &rank, sizeof rank);  // unknown: count as its own GPU
    mine[15] = 0xff;
  }
  MPI_Comm node = MPI_COMM_NULL;
  RA_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
  int n = 1;
  MPI_Comm_size(node, &n);
  std::vector<unsigned char> all(mine.size() * static_cast<std::size_t>(n));
  const int rc = MPI_Allgather(mine.data(), static_cast<int>(mine.size()), MPI_BYTE, all.data(),
                               static_cast<int>(mine.size()), MPI_BYTE, node);
  MPI_Comm_free(&node);
  RA_MPI_CHECK(rc);
  int same = 0;
  for (int i = 0; i < n; ++i)
    same += std::memcmp(all.data() + mine.size() * static_cast<std::size_t>(i), mine.data(),
                        mine.size()) == 0;
  return same;
}

}  // namespace

void require_gpu_per_rank(MPI_Comm comm, int device) {
  const int sharing = ranks_on_my_gpu(comm, device);
  agree(comm, [&] {
    if (sharing <= 1) return;
    char host[256] = "?";
    gethostname(host, sizeof host - 1);
    throw Error(ErrorClass::usage,
                detail::concat("--transport nccl: ", sharing, " ranks on host ", host,
                               " share one GPU, but NCCL needs a GPU per rank; use "
                               "--transport mpi to share GPUs"));
  });
}

}  // namespace ringattn
