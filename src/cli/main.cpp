// ringattn: the command users run. Parses argv with CLI11, runs one subcommand,
// and turns library errors (ringattn::Error) into one line and an exit code.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/help.hpp"
#include "cli/mpi_session.hpp"
#include "core/cpu.hpp"
#include "core/error.hpp"
#include "job/build_info.hpp"
#include "job/stop_request.hpp"

namespace {

// A bad command line: one line, from rank 0 only (every rank parses the same
// argv; MPI is not started yet, so the launcher's rank variable tells).
int parse_error(const CLI::App& app, const CLI::ParseError& e, int argc, char** argv) {
  const bool failed = e.get_exit_code() != 0;
  if (ringattn::launcher_rank() == 0) {
    if (failed)  // in the form of every other refusal
      std::fprintf(stderr, "ringattn: usage error: %s (see --help)\n", e.what());
    else
      app.exit(e);  // --help, --version
  }
  // A rank that exits non-zero makes mpirun kill the others, rank 0 maybe
  // before its line left the process: the ranks leave together.
  if (failed && ringattn::launcher_size() > 1) {
    std::fflush(stdout);
    std::fflush(stderr);
    ringattn::cli::MpiSession together(&argc, &argv);
    MPI_Barrier(MPI_COMM_WORLD);
  }
  return failed ? ringattn::cli::kUsage : 0;
}

// MPI subcommands: errors every rank saw alike are printed by rank 0 only;
// an error of one rank alone ends the whole job (the others would hang).
int run_under_mpi(const std::function<int(ringattn::cli::MpiSession&)>& subcommand, bool is_run,
                  int* argc, char*** argv) {
  std::unique_ptr<ringattn::cli::MpiSession> mpi;
  // Before MPI starts (seconds on a big job): a stop signal from then on
  // stops the run at its first chunk boundary instead of killing the rank.
  if (is_run) ringattn::install_stop_handlers();
  try {
    mpi = std::make_unique<ringattn::cli::MpiSession>(argc, argv);
    return subcommand(*mpi);
  } catch (const ringattn::Error& e) {
    using ringattn::ErrorClass;
    const int code = ringattn::exit_code(e.error_class());
    // usage, input and io errors come from checks all ranks agree on (the
    // io layer agrees before it throws); the rest may be one rank's own.
    const ErrorClass cls = e.error_class();
    const bool agreed = mpi && !mpi->independent_work() && cls != ErrorClass::comm &&
                        cls != ErrorClass::fault && cls != ErrorClass::internal;
    if (!agreed || mpi->rank() == 0)
      std::fprintf(stderr, "ringattn: %s error: %s\n", ringattn::error_class_name(cls),
                   ringattn::user_text(e).c_str());
    if (mpi && !agreed && mpi->size() > 1) mpi->abort(code);
    return code;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ringattn: internal error: %s\n", e.what());
    if (mpi && mpi->size() > 1) mpi->abort(ringattn::cli::kFailure);
    return ringattn::cli::kFailure;
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "ringattn: exact attention over sequences split across MPI ranks.\n"
      "Exit codes: 0 ok, 1 check failed or internal error, 2 usage, 3 input data,\n"
      "4 I/O, 5 communication, 6 fault (a rank died or timed out),\n"
      "7 stopped by SIGTERM/SIGUSR1 at a chunk boundary (continue with run --resume).",
      "ringattn"};
  app.set_version_flag("-V,--version", ringattn::build_info_text);
  app.require_subcommand(1);

  // In the order --help lists them.
  auto run_job = ringattn::cli::add_run(app);
  auto run_verify = ringattn::cli::add_verify(app);
  auto run_weights = ringattn::cli::add_weights(app);
  auto run_info = ringattn::cli::add_info(app);
  auto run_gen = ringattn::cli::add_gen(app);
  auto run_serve = ringattn::cli::add_serve(app);
  auto run_submit = ringattn::cli::add_submit(app);
  auto run_query = ringattn::cli::add_query(app);
  CLI::App* bench = app.add_subcommand("bench", "");
  bench->require_subcommand(1);
  auto run_bench_kernel = ringattn::cli::add_bench_kernel(*bench);
  auto run_bench_ring = ringattn::cli::add_bench_ring(*bench);
  auto run_plan = ringattn::cli::add_plan(app);
  auto run_selfcheck = ringattn::cli::add_selfcheck(app);
  CLI::App* help = app.add_subcommand("help", "");
  std::vector<std::string> help_path;
  help->add_option("subcommand", help_path, "A subcommand, e.g. run or bench ring");
  bool synopsis = false, markdown = false;
  help->add_flag("--synopsis", synopsis, "Every subcommand's flags in one synopsis each");
  help->add_flag("--markdown", markdown, "docs/cli.md: the synopsis and every subcommand's help");
  ringattn::cli::describe_subcommands(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return parse_error(app, e, argc, argv);
  }
  if (app.got_subcommand(help)) {
    if (synopsis || markdown) {
      const std::string text =
          markdown ? ringattn::cli::cli_reference_markdown(app) : ringattn::cli::cli_synopsis(app);
      std::fputs(text.c_str(), stdout);
      return 0;
    }
    return ringattn::cli::print_help(app, help_path);
  }

  if (bench->got_subcommand("ring") || app.got_subcommand("run") || app.got_subcommand("gen") ||
      app.got_subcommand("info") || app.got_subcommand("verify") || app.got_subcommand("serve") ||
      app.got_subcommand("weights") || app.got_subcommand("plan")) {
    const auto& chosen = app.got_subcommand("serve")     ? run_serve
                         : app.got_subcommand("weights") ? run_weights
                         : app.got_subcommand("plan")    ? run_plan
                         : app.got_subcommand("gen")     ? run_gen
                         : app.got_subcommand("info")    ? run_info
                         : app.got_subcommand("verify")  ? run_verify
                         : app.got_subcommand("run")     ? run_job
                                                         : run_bench_ring;
    // run and serve stop politely on SIGTERM: handlers before MPI starts.
    return run_under_mpi(chosen, app.got_subcommand("run") || app.got_subcommand("serve"), &argc,
                         &argv);
  }

  try {
    if (bench->got_subcommand("kernel")) return run_bench_kernel();
    if (app.got_subcommand("selfcheck")) return run_selfcheck();
    if (app.got_subcommand("submit")) return run_submit();
    if (app.got_subcommand("query")) return run_query();
  } catch (const ringattn::Error& e) {
    std::fprintf(stderr, "ringattn: %s error: %s\n", ringattn::error_class_name(e.error_class()),
                 ringattn::user_text(e).c_str());
    return ringattn::exit_code(e.error_class());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ringattn: internal error: %s\n", e.what());
    return ringattn::cli::kFailure;
  }
  return ringattn::cli::kUsage;
}
