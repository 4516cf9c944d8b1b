// Progress reporting (see progress.hpp).
#include "job/progress.hpp"

#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <fstream>
#include <string>
#include <utility>

namespace ringattn {
namespace {

std::string hms(double s) {
  const long t = static_cast<long>(std::max(0.0, s) + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  return buf;
}

// Local time with its offset from UTC: a batch log's lines read alone.
std::string timestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S%z", &tm);
  return buf;
}

ProgressObserver& observer() {
  static ProgressObserver o;
  return o;
}

bool starts_with(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}

int proc_parent_of(int pid) {
  // /proc/PID/stat: "pid (comm) state ppid ...", comm may hold spaces.
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(f, stat);
  const std::size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  char state = 0;
  int ppid = 0;
  return std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) == 2 ? ppid : 0;
}

std::string proc_stderr_of(int pid) {
  char buf[256];
  const std::string path = "/proc/" + std::to_string(pid) + "/fd/2";
  const ssize_t n = readlink(path.c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

}  // namespace

bool stderr_reaches_terminal(int pid, const ProcessView& view) {
  // A launcher is a few levels up at most (srun -> slurmstepd, mpirun ->
  // prted); past that a pipe leads to a logger, not to a person.
  constexpr int kMaxDepth = 6;
  for (int depth = 0; depth < kMaxDepth && pid > 0; ++depth) {
    const std::string link = view.stderr_of(pid);
    if (starts_with(link, "/dev/pts/") || starts_with(link, "/dev/tty")) return true;
    if (!starts_with(link, "pipe:")) return false;  // a file, a socket, /dev/null, unreadable
    pid = view.parent_of(pid);
  }
  return false;
}

bool stderr_reaches_terminal() {
  if (isatty(STDERR_FILENO)) return true;
  return stderr_reaches_terminal(static_cast<int>(getpid()),
                                 ProcessView{proc_parent_of, proc_stderr_of});
}

ProgressStyle default_progress_style() {
  return stderr_reaches_terminal() ? ProgressStyle::bar : ProgressStyle::lines;
}

void set_progress_observer(ProgressObserver o) {
  observer() = std::move(o);
}

Progress::Progress(bool enabled, ProgressStyle style, std::int64_t chunks, double rows_per_chunk,
                   double interval, std::FILE* out)
    : enabled_(enabled),
      style_(style),
      chunks_(chunks),
      rows_per_chunk_(rows_per_chunk),
      interval_(interval),
      out_(out) {}

void Progress::begin(double done) {
  base_ = done;
  timer_.reset();
  last_print_ = -1e30;
  if (!enabled_ || style_ != ProgressStyle::lines) return;
  std::fprintf(
      out_,
      "%s progress: %lld chunks of %.0f query rows (tokens x heads)%s; rate: query rows "
      "finished per second by this run\n",
      timestamp().c_str(), static_cast<long long>(chunks_), rows_per_chunk_,
      done > 0 ? (", " + std::to_string(static_cast<long long>(done)) + " done by an earlier run")
                     .c_str()
               : "");
  std::fflush(out_);
}

void Progress::update(double done) {
  if (!enabled_) return;
  if (observer()) observer()(done, chunks_);
  if (style_ == ProgressStyle::none) return;
  const double t = timer_.seconds();
  const bool last = done >= static_cast<double>(chunks_);
  // A bar redraws a few times a second at most; a line every interval.
  const double gap = style_ == ProgressStyle::bar ? 0.2 : interval_;
  if (!last && t - last_print_ < gap) return;
  last_print_ = t;
  const double mine = std::max(0.0, done - base_);  // this run's chunks
  const double rate = t > 0 ? mine * rows_per_chunk_ / t : 0.0;
  const double left = static_cast<double>(chunks_) - done;
  const std::string eta = mine > 0 ? hms(t / mine * left) : std::string("--");
  const double total = static_cast<double>(std::max<std::int64_t>(chunks_, 1));
  if (style_ == ProgressStyle::bar) {
    constexpr int kWidth = 30;
    const int filled = std::clamp(static_cast<int>(kWidth * done / total), 0, kWidth);
    std::fprintf(out_, "\r[%s%s] %5.1f%%  chunk %.2f/%lld  %.3g query rows/s  ETA %s ",
                 std::string(static_cast<std::size_t>(filled), '#').c_str(),
                 std::string(static_cast<std::size_t>(kWidth - filled), '.').c_str(),
                 100 * done / total, done, static_cast<long long>(chunks_), rate, eta.c_str());
  } else {
    std::fprintf(out_,
                 "%s progress: %.1f%% (chunk %.2f of %lld), %.3g query rows/s, elapsed %s, ETA "
                 "%s\n",
                 timestamp().c_str(), 100 * done / total, done, static_cast<long long>(chunks_),
                 rate, hms(t).c_str(), eta.c_str());
  }
  std::fflush(out_);
}

void Progress::finish() {
  if (enabled_ && style_ == ProgressStyle::bar) std::fputc('\n', out_);
}

}  // namespace ringattn
