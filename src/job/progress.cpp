// Progress reporting (see progress.hpp).
#include "job/progress.hpp"

#include <unistd.h>

#include <algorithm>
#include <string>
#include <utility>

namespace ringattn {
namespace {
std::string hms(double s) {
  const long t = static_cast<long>(s + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  return buf;
}
ProgressObserver& observer() {
  static ProgressObserver o;
  return o;
}

}  // namespace

void set_progress_observer(ProgressObserver o) {
  observer() = std::move(o);
}

Progress::Progress(bool enabled, std::int64_t chunks, double tokens_per_chunk, double interval,
                   std::FILE* out)
    : enabled_(enabled),
      tty_(enabled && isatty(fileno(out))),
      chunks_(chunks),
      tokens_per_chunk_(tokens_per_chunk),
      interval_(interval),
      out_(out) {}

void Progress::update(double done) {
  if (!enabled_) return;
  if (observer()) observer()(done, chunks_);
  const double t = timer_.seconds();
  const bool last = done >= static_cast<double>(chunks_);
  if (!tty_ && !last && t - last_print_ < interval_) return;
  last_print_ = t;
  const double rate = t > 0 ? done * tokens_per_chunk_ / t : 0.0;
  const double eta = done > 0 ? t / done * (static_cast<double>(chunks_) - done) : 0.0;
  if (tty_) {
    constexpr int kWidth = 30;
    const int filled =
        static_cast<int>(kWidth * done / static_cast<double>(std::max<std::int64_t>(chunks_, 1)));
    std::fprintf(out_, "\r[%s%s] chunk %.1f/%lld  %.3g tokens/s  ETA %s ",
                 std::string(static_cast<std::size_t>(filled), '#').c_str(),
                 std::string(static_cast<std::size_t>(kWidth - filled), '.').c_str(), done,
                 static_cast<long long>(chunks_), rate, hms(eta).c_str());
  } else {
    std::fprintf(out_, "progress: chunk %.2f/%lld, %.3g tokens/s, elapsed %s, ETA %s\n", done,
                 static_cast<long long>(chunks_), rate, hms(t).c_str(), hms(eta).c_str());
  }
  std::fflush(out_);
}

void Progress::finish() {
  if (enabled_ && tty_) std::fputc('\n', out_);
}

}  // namespace ringattn
