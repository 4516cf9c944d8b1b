// The communication watchdog's thread (see watchdog.hpp).
#include "comm/watchdog.hpp"

#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "core/error.hpp"

namespace ringattn {
namespace {

using Clock = std::chrono::steady_clock;

void print_timeout(const std::string& what, double timeout) {
  int rank = -1, init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Comm_rank(MPI_COMM_WORLD, &rank);  // a local query
  char host[256] = "?";
  gethostname(host, sizeof host - 1);
  std::fprintf(stderr,
               "ringattn: fault error: rank %d on %s: %s did not complete within %g s "
               "(--comm-timeout); a peer is dead or stuck; ending the job\n",
               rank, host, what.c_str(), timeout);
  std::fflush(stderr);
}

// now + seconds, or the clock's end when that would not fit: a duration
// cast of more than ~9.2e9 s overflows steady_clock's int64 nanoseconds
// (undefined, in practice a deadline in the past: the job died at once).
Clock::time_point deadline_after(double seconds) {
  const Clock::time_point now = Clock::now();
  const double room = std::chrono::duration<double>(Clock::time_point::max() - now).count();
  if (!(seconds < room / 2)) return Clock::time_point::max();
  return now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

struct Scope {
  std::string what;
  Clock::time_point deadline;
};

class Watchdog {
 public:
  // Never destroyed: its detached thread may be waiting on the members
  // while static destructors run at exit.
  static Watchdog& get() {
    static Watchdog* w = new Watchdog;
    return *w;
  }

  void set_timeout(double s) {
    std::lock_guard<std::mutex> lock(mu_);
    timeout_ = s > 0 ? s : 0;
    if (timeout_ > 0 && !thread_.joinable()) {
      thread_ = std::thread([this] { watch(); });
      thread_.detach();  // lives as long as the process; never joined
    }
  }
  double timeout() {
    std::lock_guard<std::mutex> lock(mu_);
    return timeout_;
  }

  bool push(std::string what) {
    std::lock_guard<std::mutex> lock(mu_);
    if (timeout_ <= 0) return false;
    scopes_.push_back({std::move(what), deadline_after(timeout_)});
    cv_.notify_all();
    return true;
  }
  void pop() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!scopes_.empty()) scopes_.pop_back();
    // The enclosing scope waits afresh from here: it was not blocked meanwhile.
    if (!scopes_.empty()) scopes_.back().deadline = deadline_after(timeout_);
    cv_.notify_all();
  }

 private:
  [[noreturn]] void expire(const Scope& s, double timeout) {
    print_timeout(s.what, timeout);
    // No MPI call from this thread, no unwinding.
    abort_job(JobAbort{exit_code(ErrorClass::fault), true});
  }

  void watch() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (scopes_.empty()) {
        cv_.wait(lock);
        continue;
      }
      const Scope s = scopes_.back();
      if (Clock::now() >= s.deadline) expire(s, timeout_);
      // Wake at the deadline, or earlier when scopes change.
      cv_.wait_until(lock, s.deadline);
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Scope> scopes_;
  double timeout_ = 0;
  std::thread thread_;
};

}  // namespace

void set_comm_timeout(double seconds) {
  Watchdog::get().set_timeout(seconds);
}
double comm_timeout() {
  return Watchdog::get().timeout();
}

void comm_timed_out(const std::string& what) {
  print_timeout(what, comm_timeout());
  abort_job(JobAbort{exit_code(ErrorClass::fault), false});
}

CommWatch::CommWatch(std::string what) : active_(Watchdog::get().push(std::move(what))) {}
CommWatch::~CommWatch() {
  if (active_) Watchdog::get().pop();
}

}  // namespace ringattn
