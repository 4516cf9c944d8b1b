// Running a function in a child process with a deadline, so that code which
// may crash or loop on untrusted data cannot take the calling process with
// it. HDF5 1.10 crashes (rather than fails) on some damaged files, and can
// loop on others (tests/fuzz/KNOWN_HDF5_ISSUES.md): whatever opens a file a
// user named runs its first look at it here, and a crash becomes a verdict
// about the file instead of a dead MPI rank with a backtrace.
//
// The child is forked, runs fn, writes fn's result (or the Error fn threw)
// to a pipe and ends with _exit: no atexit handlers, no MPI, no unwinding
// into the parent's frames. Its stdout and stderr go to /dev/null (a crashing
// library's last words are not the user's message) and its crash signals
// have their default action (an MPI library's handlers could print a
// backtrace, or deadlock on a heap the crash corrupted).
//
// Includes: <chrono>, <functional>, <string>, core/error.hpp (ErrorClass).
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "core/error.hpp"

namespace ringattn {

struct IsolatedResult {
  enum class Status {
    done,       // fn returned: `value`
    failed,     // fn threw: `error_class` and `message` (an Error's own text)
    crashed,    // the child died of `signal` (SIGSEGV, SIGABRT, SIGKILL by the OOM killer, ...)
    timed_out,  // fn had not returned at the deadline; the child was killed
    lost,       // the child ended without a verdict (`message` says how)
  };
  Status status = Status::done;
  std::string value;
  ErrorClass error_class = ErrorClass::internal;
  std::string message;
  int signal = 0;
  std::chrono::seconds deadline{0};

  // For crashed / timed_out / lost: "crashed with SIGSEGV (Segmentation
  // fault)", "did not finish within 300 s", "ended with status 1 without a
  // verdict". Empty for done and failed.
  std::string describe() const;
};

// Runs fn in a forked child and waits at most `deadline` for it. An Error fn
// throws comes back with its class and text; any other exception as class
// internal. Where isolation is off (set_isolation_enabled) or fork/pipe
// fail, fn runs in this process (so a crash is this process's).
IsolatedResult run_isolated(const std::function<std::string()>& fn, std::chrono::seconds deadline);

// On by default, except in AddressSanitizer builds. The fuzz harness turns
// it off: it needs the crash, and the coverage, in its own process.
void set_isolation_enabled(bool enabled);

// False in AddressSanitizer builds: gcc 12's ASan allocator has no fork
// handlers, so a child forked while another thread (an MPI progress thread)
// holds its lock deadlocks on its first allocation (seen: the describer's
// child stuck in SizeClassAllocator64::GetFromAllocator until the deadline).
// There fn runs in the calling process, where the sanitizer also sees it; a
// file that crashes HDF5 then crashes the caller.
bool isolation_fork_safe();

}  // namespace ringattn
