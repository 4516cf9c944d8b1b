// All ranks reach the same verdict (see agree.hpp). Two collectives on the
// success path (one all-reduce); a broadcast of the message when a rank failed.
#include "comm/agree.hpp"

#include <chrono>
#include <climits>
#include <string>
#include <thread>

#include "core/error.hpp"

namespace ringattn {

namespace {

// The failed-or-not all-reduce of a collective step: non-blocking, so that
// a failed rank can give up on peers stuck in the call it left.
int lowest_failed_rank(MPI_Comm comm, int failed_rank, const std::string& msg, int cls) {
  int lowest = INT_MAX;
  MPI_Request req = MPI_REQUEST_NULL;
  RA_MPI_CHECK(MPI_Iallreduce(&failed_rank, &lowest, 1, MPI_INT, MPI_MIN, comm, &req));
  if (failed_rank == INT_MAX) {
    RA_MPI_CHECK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    return lowest;
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    int done = 0;
    RA_MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
    if (done) return lowest;
    const std::chrono::duration<double> waited = std::chrono::steady_clock::now() - t0;
    if (waited.count() > kCollectiveStepGraceSeconds)
      abort_job(Error(static_cast<ErrorClass>(cls), msg));
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace

void agree(MPI_Comm comm, const std::function<void()>& step, StepKind kind) {
  int rank = 0;
  RA_MPI_CHECK(MPI_Comm_rank(comm, &rank));

  int failed_rank = INT_MAX;  // INT_MAX: this rank succeeded
  int cls = static_cast<int>(ErrorClass::internal);
  std::string msg;
  try {
    step();
  } catch (const Error& e) {
    failed_rank = rank;
    cls = static_cast<int>(e.error_class());
    msg = e.what();
  } catch (const std::exception& e) {
    failed_rank = rank;
    msg = std::string("unexpected exception: ") + e.what();
  }

  int lowest = INT_MAX;
  if (kind == StepKind::collective)
    lowest = lowest_failed_rank(comm, failed_rank, msg, cls);
  else
    RA_MPI_CHECK(MPI_Allreduce(&failed_rank, &lowest, 1, MPI_INT, MPI_MIN, comm));
  if (lowest == INT_MAX) return;

  // The lowest failing rank tells the others what went wrong.
  long long len = static_cast<long long>(msg.size());
  RA_MPI_CHECK(MPI_Bcast(&cls, 1, MPI_INT, lowest, comm));
  RA_MPI_CHECK(MPI_Bcast(&len, 1, MPI_LONG_LONG, lowest, comm));
  msg.resize(static_cast<std::size_t>(len));
  if (len > 0) RA_MPI_CHECK(MPI_Bcast(msg.data(), static_cast<int>(len), MPI_CHAR, lowest, comm));
  throw Error(static_cast<ErrorClass>(cls), msg);
}

}  // namespace ringattn
