// The communication watchdog: a rank blocked on its peers for longer than the
// limit (--comm-timeout) ends the whole job instead of hanging it.
//
// Two layers. The ring's own wait (MpiTransport::wait) polls with a deadline
// and throws Error(fault) naming the peer it waited for; the CLI then aborts
// the job. Everything else that blocks on all ranks (collective HDF5 I/O,
// agreement, the final gathers) runs inside a CommWatch scope: a background
// thread checks the open scope's deadline and, when it passes, prints one
// line naming this rank and what it waited for and exits the process with
// code 6 (kFault) without finalising MPI. The launcher (mpirun, or srun with
// --kill-on-bad-exit) then ends the other ranks. The thread makes no MPI
// call: the job runs with MPI_THREAD_FUNNELED.
//
// Process-wide, because the limit is a property of the job and scopes open
// deep in the call tree. Includes: <string>.
#pragma once

#include <string>

namespace ringattn {

// Seconds a rank may stay blocked; 0 (the default) disables the watchdog.
void set_comm_timeout(double seconds);
double comm_timeout();

// From the thread that runs MPI: prints the timeout line for `what` and
// aborts the job (MPI_Abort, code 6). Never returns, never unwinds (an
// unwinding rank would wait in collective closes for peers that are gone).
[[noreturn]] void comm_timed_out(const std::string& what);

// While alive, the calling thread is blocked on peers doing `what` (for the
// line printed on expiry, e.g. "collective write of chunk 3"). Scopes nest;
// the innermost one's deadline is watched. Cheap when the timeout is 0.
class CommWatch {
 public:
  explicit CommWatch(std::string what);
  ~CommWatch();
  CommWatch(const CommWatch&) = delete;
  CommWatch& operator=(const CommWatch&) = delete;

 private:
  bool active_ = false;
};

}  // namespace ringattn
