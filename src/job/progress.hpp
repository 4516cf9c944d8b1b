// Progress of a run on rank 0's stderr: how much of the work is done, the
// rate, the time left. Three styles:
//   bar    a bar redrawn in place, for a person watching a terminal
//   lines  a timestamped line at most every `interval` seconds (and the
//          last one), so week-long batch logs stay readable
//   none   nothing
// The default picks bar when stderr reaches a terminal, through a launcher
// too (mpirun hands rank 0 a pipe and copies it to its own terminal), and
// lines otherwise (a batch log, a file, srun without --pty).
//
// The rate is query rows (one query token in one head) finished per second
// by this run; a resumed run's earlier chunks count in the fraction done but
// not in the rate or the time left, so neither jumps after --resume.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

#include "core/timer.hpp"

namespace ringattn {

enum class ProgressStyle { bar, lines, none };

// Whether a process whose stderr is `self` sees a terminal there, directly
// or through its launchers: walks the ancestors whose stderr is a pipe
// (parent_of, stderr_of: the Linux /proc answers by default) to the first
// that holds something else, and asks whether that is a terminal.
struct ProcessView {
  std::function<int(int pid)> parent_of;          // 0 when unknown
  std::function<std::string(int pid)> stderr_of;  // the link of /proc/PID/fd/2, "" if unreadable
};
bool stderr_reaches_terminal(int pid, const ProcessView& view);
bool stderr_reaches_terminal();  // this process, from /proc
ProgressStyle default_progress_style();

// A process-wide listener of every update of an enabled Progress, unthrottled
// (the service's job status reads it), called on the thread that runs the
// job; nullptr removes it.
using ProgressObserver = std::function<void(double done, std::int64_t chunks)>;
void set_progress_observer(ProgressObserver observer);

class Progress {
 public:
  // enabled: only rank 0 reports. rows_per_chunk: query tokens x heads in a
  // chunk. interval: seconds between lines (style lines).
  Progress(bool enabled, ProgressStyle style, std::int64_t chunks, double rows_per_chunk,
           double interval, std::FILE* out = stderr);
  // This run starts with `done` chunks already done (a resumed run's):
  // prints what the figures mean, once.
  void begin(double done);
  // `done` chunks finished (fractions count: within a chunk and a ring step).
  void update(double done);
  // Ends a bar's line.
  void finish();

 private:
  bool enabled_;
  ProgressStyle style_;
  std::int64_t chunks_;
  double rows_per_chunk_, interval_, base_ = 0, last_print_ = -1e30;
  std::FILE* out_;
  Timer timer_;
};

}  // namespace ringattn
