// MpiSession (see mpi_session.hpp).
#include "cli/mpi_session.hpp"

#include <cstdlib>

#include "comm/agree.hpp"
#include "core/error.hpp"

namespace ringattn::cli {
namespace {

// The library's abort_job lands here: MPI_Abort ends every rank with the
// code; a helper thread (the watchdog) may not call MPI, so it just exits.
void abort_with_mpi(const JobAbort& a) {
  int started = 0, finalized = 0;
  MPI_Initialized(&started);
  MPI_Finalized(&finalized);
  if (!a.on_helper_thread && started && !finalized) MPI_Abort(MPI_COMM_WORLD, a.exit_code);
}

}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
  int provided = 0;
  // FUNNELED: only the thread that called MPI_Init calls MPI (the kernel's
  // progress hook runs on it); OpenMP workers never do.
  RA_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
  RA_CHECK(provided >= MPI_THREAD_FUNNELED, comm, "MPI gives thread level ", provided,
           ", ringattn needs MPI_THREAD_FUNNELED");
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  RA_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  RA_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
  set_job_abort_handler(abort_with_mpi);
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void MpiSession::abort(int code) const {
  abort_job(JobAbort{code, false});
}

int on_rank0(const MpiSession& mpi, const std::function<int()>& work) {
  int code = 0;
  agree(MPI_COMM_WORLD, [&] {
    if (mpi.rank() == 0) code = work();
  });
  RA_MPI_CHECK(MPI_Bcast(&code, 1, MPI_INT, 0, MPI_COMM_WORLD));
  return code;
}

}  // namespace ringattn::cli
