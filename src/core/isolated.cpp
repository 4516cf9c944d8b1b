// fork, pipe, poll and waitpid behind run_isolated (see isolated.hpp). The
// verdict crosses the pipe as one CBOR object (nlohmann's binary JSON: its
// strings carry any bytes, so a file or dataset name that is not UTF-8
// survives): {"value": bytes} or {"class": n, "message": text}.
#include "core/isolated.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <nlohmann/json.hpp>
#include <vector>

namespace ringattn {
namespace {

using nlohmann::json;

#if defined(__SANITIZE_ADDRESS__)  // gcc
constexpr bool kForkSafe = false;
#elif defined(__has_feature)  // clang
constexpr bool kForkSafe = !__has_feature(address_sanitizer);
#else
constexpr bool kForkSafe = true;
#endif

std::atomic<bool> g_enabled{kForkSafe};

// What fn did, as the envelope the child sends.
json run_caught(const std::function<std::string()>& fn) {
  try {
    return json{{"value", fn()}};
  } catch (const Error& e) {
    return json{{"class", static_cast<int>(e.error_class())}, {"message", e.what()}};
  } catch (const std::exception& e) {
    return json{{"class", static_cast<int>(ErrorClass::internal)}, {"message", e.what()}};
  } catch (...) {
    return json{{"class", static_cast<int>(ErrorClass::internal)},
                {"message", "an exception of unknown type"}};
  }
}

IsolatedResult from_envelope(const json& j) {
  IsolatedResult r;
  if (j.contains("value")) {
    r.status = IsolatedResult::Status::done;
    r.value = j.at("value").get<std::string>();
  } else {
    r.status = IsolatedResult::Status::failed;
    r.error_class = static_cast<ErrorClass>(j.at("class").get<int>());
    r.message = j.at("message").get<std::string>();
  }
  return r;
}

IsolatedResult run_here(const std::function<std::string()>& fn) {
  return from_envelope(run_caught(fn));
}

bool write_all(int fd, const std::uint8_t* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

[[noreturn]] void child_main(const std::function<std::string()>& fn, int out) {
  for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL}) std::signal(sig, SIG_DFL);
  const int devnull = ::open("/dev/null", O_WRONLY);
  if (devnull >= 0) {
    ::dup2(devnull, 1);
    ::dup2(devnull, 2);
  }
  bool ok = false;
  try {
    const std::vector<std::uint8_t> bytes = json::to_cbor(run_caught(fn));
    ok = write_all(out, bytes.data(), bytes.size());
  } catch (...) {  // out of memory for the envelope: "lost", below
  }
  ::_exit(ok ? 0 : 1);
}

// Reads the child's pipe until it closes or the deadline passes.
bool read_until(int fd, std::chrono::steady_clock::time_point deadline,
                std::vector<std::uint8_t>& bytes) {
  std::uint8_t buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd pfd{fd, POLLIN, 0};
    const int n = ::poll(&pfd, 1, static_cast<int>(std::min<long long>(left.count(), 1000)));
    if (n == 0 || (n < 0 && errno == EINTR)) continue;
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return true;
    bytes.insert(bytes.end(), buf, buf + r);
  }
}

IsolatedResult verdict(const std::vector<std::uint8_t>& bytes, int ws, bool in_time) {
  IsolatedResult r;
  if (!in_time) {
    r.status = IsolatedResult::Status::timed_out;
    return r;
  }
  if (WIFSIGNALED(ws)) {
    r.status = IsolatedResult::Status::crashed;
    r.signal = WTERMSIG(ws);
    return r;
  }
  const json j = json::from_cbor(bytes, true, /*allow_exceptions=*/false);
  if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0 && j.is_object() &&
      (j.contains("value") || (j.contains("class") && j.contains("message"))))
    return from_envelope(j);
  r.status = IsolatedResult::Status::lost;
  r.message = "ended with status " + std::to_string(WIFEXITED(ws) ? WEXITSTATUS(ws) : ws) +
              " without a verdict";
  return r;
}

}  // namespace

bool isolation_fork_safe() {
  return kForkSafe;
}

void set_isolation_enabled(bool enabled) {
  g_enabled.store(enabled);
}

IsolatedResult run_isolated(const std::function<std::string()>& fn, std::chrono::seconds deadline) {
  int fds[2];
  if (!g_enabled.load() || ::pipe2(fds, O_CLOEXEC) != 0) return run_here(fn);
  std::fflush(stdout);  // else the child's copy of a buffer could be printed twice
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return run_here(fn);
  }
  if (pid == 0) {
    ::close(fds[0]);
    child_main(fn, fds[1]);
  }
  ::close(fds[1]);
  std::vector<std::uint8_t> bytes;
  const bool in_time = read_until(fds[0], std::chrono::steady_clock::now() + deadline, bytes);
  ::close(fds[0]);
  if (!in_time) ::kill(pid, SIGKILL);
  int ws = 0;
  while (::waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
  }
  IsolatedResult r = verdict(bytes, ws, in_time);
  r.deadline = deadline;
  return r;
}

std::string IsolatedResult::describe() const {
  switch (status) {
    case Status::crashed: {
      const char* abbrev = ::sigabbrev_np(signal);
      return "crashed with " + (abbrev ? "SIG" + std::string(abbrev) : std::to_string(signal)) +
             " (" + ::strsignal(signal) + ")";
    }
    case Status::timed_out:
      return "did not finish within " + std::to_string(deadline.count()) + " s";
    case Status::lost:
      return message;
    case Status::done:
    case Status::failed:
      break;
  }
  return "";
}

}  // namespace ringattn
