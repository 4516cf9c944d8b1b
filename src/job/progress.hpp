// Progress of a run on rank 0's stderr: chunk k of K, tokens/s, ETA. On a
// terminal a bar redrawn in place; in a batch log a plain line at most every
// `interval` seconds (and the last one), so week-long logs stay readable.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>

#include "core/timer.hpp"

namespace ringattn {

// A process-wide listener of every update of an enabled Progress, unthrottled
// (the service's job status reads it), called on the thread that runs the
// job; nullptr removes it.
using ProgressObserver = std::function<void(double done, std::int64_t chunks)>;
void set_progress_observer(ProgressObserver observer);

class Progress {
 public:
  // enabled: only rank 0 reports. tokens_per_chunk: query tokens x heads in a chunk.
  Progress(bool enabled, std::int64_t chunks, double tokens_per_chunk, double interval,
           std::FILE* out = stderr);
  // `done` chunks finished (fractions count: a chunk is P ring steps).
  void update(double done);
  // Ends a terminal bar's line.
  void finish();

 private:
  bool enabled_, tty_;
  std::int64_t chunks_;
  double tokens_per_chunk_, interval_, last_print_ = -1e30;
  std::FILE* out_;
  Timer timer_;
};

}  // namespace ringattn
