// The run's metrics file (--metrics): per-rank figures and the context they
// were measured in, as JSON, for scaling studies and batch logs.
//
// It follows the output's rules: it is never the input, a file the input
// links to, the output or the output's own partial and lock files (compared
// as the files the paths will name, existing or not); an existing file is
// replaced only with --overwrite; it is written under a temporary name and
// renamed. All of this is checked before any work starts, so a bad metrics
// path costs seconds, not a committed run whose metrics then fail.
//
// Includes: mpi.h (MPI_Comm), job/job.hpp (JobReport), job/job_config.hpp.
#pragma once

#include <mpi.h>

#include <string>

#include "job/job.hpp"
#include "job/job_config.hpp"

namespace ringattn {

// Collective over comm: rank 0 checks cfg.metrics (when set) by the rules
// above; every rank returns, or throws the same Error (usage; io for a
// missing or read-only directory).
void check_metrics_target(MPI_Comm comm, const JobConfig& cfg, const InputInfo& input);

// Rank-local (rank 0 calls it after the run): writes the metrics JSON to
// cfg.metrics, through a temporary file and a rename. Per-rank figures plus
// a context block (version, git commit, hosts, ranks, threads, library
// versions, Slurm job id).
void write_metrics(const JobConfig& cfg, const JobReport& report);

}  // namespace ringattn
