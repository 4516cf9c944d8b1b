// Errors for the whole library, and the one set of check macros every layer
// uses (MPI, HDF5, CUDA, NCCL and plain conditions). Library code throws
// ringattn::Error; only the CLI turns it into a message and an exit code.
//
// The macros only name library calls inside their bodies, so this header
// includes none of mpi.h, hdf5.h, cuda_runtime.h or nccl.h: a file that uses
// RA_MPI_CHECK already includes mpi.h.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace ringattn {

// What went wrong, in the classes the exit codes distinguish (see cli).
enum class ErrorClass {
  usage,     // bad flags or configuration
  input,     // the input data is unusable
  io,        // reading or writing files failed
  comm,      // MPI / NCCL communication failed
  fault,     // a rank died, a timeout fired
  internal,  // a bug: an invariant did not hold
};

const char* error_class_name(ErrorClass c);

// The process exit code of each class, the one table (usage 2, input 3,
// io 4, comm 5, fault 6, internal 1); the CLI's own codes (0 ok, 7 stopped)
// extend it.
constexpr int exit_code(ErrorClass c) {
  switch (c) {
    case ErrorClass::usage:
      return 2;
    case ErrorClass::input:
      return 3;
    case ErrorClass::io:
      return 4;
    case ErrorClass::comm:
      return 5;
    case ErrorClass::fault:
      return 6;
    case ErrorClass::internal:
      return 1;
  }
  return 1;
}

class Error;
// What a user reads of an error: its text without the source location
// ("[job/job.cpp:12, host:0]") for the classes a user's flags, data or files
// cause (usage, input, io); other classes, or RINGATTN_DEBUG=1 in the
// environment, keep it for a bug report.
std::string user_text(const Error& e);

class Error : public std::runtime_error {
 public:
  Error(ErrorClass cls, const std::string& what) : std::runtime_error(what), cls_(cls) {}
  ErrorClass error_class() const { return cls_; }

 private:
  ErrorClass cls_;
};

// Ending the whole job from one rank. An error only this rank saw, while its
// peers wait for it in a collective, cannot unwind (the collective closes on
// the way would wait for them too): the library prints one line and calls
// abort_job, which runs the handler the program installed (the CLI's calls
// MPI_Abort, so the launcher ends every rank with this exit code). A handler
// is told whether it runs on a helper thread (the watchdog's), where no MPI
// call is allowed. Without a handler, or when it returns, the process exits.
struct JobAbort {
  int exit_code = 1;
  bool on_helper_thread = false;
};
using JobAbortHandler = void (*)(const JobAbort&);
void set_job_abort_handler(JobAbortHandler handler);
// The handler installed now (a layer that adds its own last words, like the
// service answering its clients, calls it after them).
JobAbortHandler job_abort_handler();
// Prints "ringattn: <class> error: <what>" and ends the job with the class's code.
[[noreturn]] void abort_job(const Error& e);
// Ends the job after the caller printed its own line (the watchdog does).
[[noreturn]] void abort_job(const JobAbort& how);

namespace detail {
// "host:rank" as far as the environment tells it (no MPI call: core knows no MPI).
std::string where_am_i();
[[noreturn]] void throw_error(ErrorClass cls, const char* file, int line, const std::string& msg);
// The function a checked call names ("H5Dwrite" for "H5Dwrite(dset, ...)"):
// users read the library's name for what failed, not our source text.
std::string call_name(const char* expr);

template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace ringattn

// Throw an Error of class CLS with a message built from the remaining args.
#define RA_FAIL(cls, ...)                                                          \
  ::ringattn::detail::throw_error(::ringattn::ErrorClass::cls, __FILE__, __LINE__, \
                                  ::ringattn::detail::concat(__VA_ARGS__))

// Throw an Error of class CLS with a message built from the remaining args when
// COND is false. Use for input validation and invariants alike.
#define RA_CHECK(cond, cls, ...)                                                       \
  do {                                                                                 \
    if (!(cond))                                                                       \
      ::ringattn::detail::throw_error(::ringattn::ErrorClass::cls, __FILE__, __LINE__, \
                                      ::ringattn::detail::concat(__VA_ARGS__));        \
  } while (0)

#define RA_MPI_CHECK(call)                                                                  \
  do {                                                                                      \
    int ra_rc_ = (call);                                                                    \
    if (ra_rc_ != MPI_SUCCESS) {                                                            \
      char ra_msg_[MPI_MAX_ERROR_STRING];                                                   \
      int ra_len_ = 0;                                                                      \
      MPI_Error_string(ra_rc_, ra_msg_, &ra_len_);                                          \
      ::ringattn::detail::throw_error(                                                      \
          ::ringattn::ErrorClass::comm, __FILE__, __LINE__,                                 \
          ::ringattn::detail::concat(::ringattn::detail::call_name(#call), ": ", ra_msg_)); \
    }                                                                                       \
  } while (0)

// HDF5 calls return a negative value on failure; the error stack was printed or
// captured by the caller's H5E settings.
#define RA_H5_CHECK(call)                                                               \
  ([&]() {                                                                              \
    auto ra_rc_ = (call);                                                               \
    if (ra_rc_ < 0)                                                                     \
      ::ringattn::detail::throw_error(                                                  \
          ::ringattn::ErrorClass::io, __FILE__, __LINE__,                               \
          ::ringattn::detail::concat(::ringattn::detail::call_name(#call), " failed")); \
    return ra_rc_;                                                                      \
  }())

#define RA_CUDA_CHECK(call)                                                      \
  do {                                                                           \
    cudaError_t ra_rc_ = (call);                                                 \
    if (ra_rc_ != cudaSuccess)                                                   \
      ::ringattn::detail::throw_error(                                           \
          ::ringattn::ErrorClass::fault, __FILE__, __LINE__,                     \
          ::ringattn::detail::concat(::ringattn::detail::call_name(#call), ": ", \
                                     cudaGetErrorString(ra_rc_)));               \
  } while (0)

#define RA_NCCL_CHECK(call)                                                      \
  do {                                                                           \
    ncclResult_t ra_rc_ = (call);                                                \
    if (ra_rc_ != ncclSuccess)                                                   \
      ::ringattn::detail::throw_error(                                           \
          ::ringattn::ErrorClass::comm, __FILE__, __LINE__,                      \
          ::ringattn::detail::concat(::ringattn::detail::call_name(#call), ": ", \
                                     ncclGetErrorString(ra_rc_)));               \
  } while (0)
