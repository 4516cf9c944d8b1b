// The subcommands of the ringattn CLI: each registers its options on a CLI11
// app and returns the exit code to use. Only cli knows about argv and exit codes.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace ringattn::cli {

// Exit codes (documented in --help and README).
enum ExitCode : int {
  kOk = 0,
  kFailure = 1,     // a check failed (selfcheck beyond tolerance) or an internal error
  kUsage = 2,       // bad flags or configuration
  kInputError = 3,  // the input data is unusable
  kIoError = 4,     // reading or writing files failed
  kCommError = 5,   // communication failed
  kFault = 6,       // a rank died or a timeout fired
  kStopped = 7,     // stopped on SIGTERM/SIGUSR1 at a chunk boundary; resume with --resume
};

// Each returns the callback to run when its subcommand was chosen.
std::function<int()> add_bench_kernel(CLI::App& bench);
std::function<int()> add_selfcheck(CLI::App& app);

class MpiSession;
// Subcommands that run under mpirun get the MPI session.
std::function<int(MpiSession&)> add_bench_ring(CLI::App& bench);
std::function<int(MpiSession&)> add_run(CLI::App& app);
// One-process tools (rank 0 works, other ranks wait, all return its code).
std::function<int(MpiSession&)> add_gen(CLI::App& app);
std::function<int(MpiSession&)> add_info(CLI::App& app);
std::function<int(MpiSession&)> add_verify(CLI::App& app);

}  // namespace ringattn::cli
