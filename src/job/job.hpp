// One run: config -> read shard -> ring -> write shard, chunk by chunk
// (batch, K/V head group), then commit the output and report metrics.
// Collective over the communicator: every rank calls run_job with the same
// config. Errors found by checks every rank makes alike (bad input, existing
// output, ...) are thrown on every rank; the CLI prints them once.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/documents.hpp"
#include "io/input_file.hpp"
#include "job/job_config.hpp"

namespace ringattn {

// What one rank spent and moved.
struct RankMetrics {
  double wall_s = 0;       // the whole run on this rank
  double compute_s = 0;    // kernel time
  double comm_wait_s = 0;  // blocked on ring hops (exposed communication)
  double io_read_s = 0, io_write_s = 0;
  double flops = 0;  // attention flops of the visible pairs computed here
  double bytes_sent = 0, bytes_read = 0, bytes_written = 0;
  double peak_rss_mb = 0;  // peak resident memory
  char host[256] = {};     // host name (fixed size: the struct is gathered as bytes)
  char cpus[512] = {};     // the CPUs its threads may run on, "0-3,8" (core/cpu.hpp)
};

struct JobReport {
  InputInfo input;
  Documents documents;  // the input's packed sequences (one document when dense)
  int ranks = 1;
  int threads = 1;
  PartitionKind partition = PartitionKind::contiguous;
  std::int64_t chunks = 0;
  bool resumed = false;             // --resume continued a partial output
  std::int64_t chunks_resumed = 0;  // chunks a partial output already held (--resume)
  std::int64_t chunks_done = 0;     // chunks the output holds on return
  int stopped_by = 0;               // a stop signal ended the run early (output not committed)
  int steps_done = 0;        // stopped inside chunk chunks_done: its ring steps folded, else 0
  int steps_resumed = 0;     // the resumed run continued chunk chunks_resumed at this step
  std::string partial_path;  // where the partial output is kept when stopped
  double wall_s = 0;         // slowest rank
  std::vector<RankMetrics> per_rank;  // on rank 0: every rank's; elsewhere: its own only
};

// Runs the job; the output is committed when it returns, unless a stop
// signal (job/stop_request.hpp) reached a rank: then the ranks stop together
// at the next ring step (CPU forward; the GPU ring and backward runs at the
// chunk's end), keep the partial output (and a chunk's state:
// io/chunk_state.hpp) and return with stopped_by set. cfg.resume continues such a partial output.
JobReport run_job(MPI_Comm comm, const JobConfig& cfg);

// The config as JSON text, as it ran on an input with packed documents
// (packed_input) or without (stored in the output's attributes and metrics).
std::string config_json(const JobConfig& cfg, bool packed_input);

// What a partial output must have been made with for cfg to continue it:
// the input (path, size, mtime, inode), dataset names and every setting that
// changes the result's bits (ranks and partition included; threads only for
// a backward run, whose dq sums per thread).
std::string resume_key_json(const JobConfig& cfg, const InputInfo& info, int ranks);

}  // namespace ringattn
