// The subcommands of the ringattn CLI: each registers its options on a CLI11
// app and returns the exit code to use. Only cli knows about argv and exit codes.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

#include "core/error.hpp"

namespace ringattn::cli {

// Exit codes (documented in --help and README): the error classes' table
// (core/error.hpp) plus success and a stop.
enum ExitCode : int {
  kOk = 0,
  kFailure = exit_code(ErrorClass::internal),  // a check failed (selfcheck), or a bug
  kUsage = exit_code(ErrorClass::usage),       // bad flags or configuration
  kInputError = exit_code(ErrorClass::input),  // the input data is unusable
  kIoError = exit_code(ErrorClass::io),        // reading or writing files failed
  kCommError = exit_code(ErrorClass::comm),    // communication failed
  kFault = exit_code(ErrorClass::fault),       // a rank died or a timeout fired
  kStopped = 7,  // stopped on SIGTERM/SIGUSR1 at a chunk boundary; resume with --resume
};

// Each returns the callback to run when its subcommand was chosen.
std::function<int()> add_bench_kernel(CLI::App& bench);
std::function<int()> add_selfcheck(CLI::App& app);

class MpiSession;
// Subcommands that run under mpirun get the MPI session.
std::function<int(MpiSession&)> add_bench_ring(CLI::App& bench);
std::function<int(MpiSession&)> add_run(CLI::App& app);
// The attention service (under mpirun) and its one-process shell clients.
std::function<int(MpiSession&)> add_serve(CLI::App& app);
std::function<int()> add_submit(CLI::App& app);
std::function<int()> add_query(CLI::App& app);
// One-process tools (rank 0 works, other ranks wait, all return its code).
std::function<int(MpiSession&)> add_gen(CLI::App& app);
std::function<int(MpiSession&)> add_info(CLI::App& app);
std::function<int(MpiSession&)> add_verify(CLI::App& app);
// Every rank works: weights splits the keys among them, plan --measure-link
// times the link between them (then rank 0 plans and prints).
std::function<int(MpiSession&)> add_weights(CLI::App& app);
std::function<int(MpiSession&)> add_plan(CLI::App& app);

}  // namespace ringattn::cli
