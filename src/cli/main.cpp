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
#include "cli/mpi_session.hpp"
#include "core/cpu.hpp"
#include "core/error.hpp"
#include "job/build_info.hpp"
#include "job/stop_request.hpp"

namespace {

// The subcommands in the order --help lists them, each with a one-line
// summary for that list and an example for its own help; the subcommand's
// full description moves below its options.
struct Summary {
  const char* path;  // "bench ring": a subcommand of bench
  const char* line;
  const char* example;
};
constexpr Summary kSummaries[] = {
    {"run", "Compute exact attention for an HDF5 input across the MPI ranks",
     "mpirun -np 4 ringattn run --input in.h5 --output out.h5 --causal --lse"},
    {"verify", "Check a run's output against a float64 recomputation",
     "ringattn verify --input in.h5 --output out.h5 --rows 2000"},
    {"weights", "Write the exact attention weights of chosen rows of a run",
     "ringattn weights --input in.h5 --output out.h5 --rows 0:4096:512 --top-k 32 --to w.h5"},
    {"info", "Describe an HDF5 file and whether `run` accepts it", "ringattn info in.h5 --json"},
    {"gen", "Write a seeded synthetic input",
     "ringattn gen --output in.h5 --heads 8 --kv-heads 2 --n 65536 --d 64"},
    {"serve", "Run the attention service: contexts resident across the ranks",
     "mpirun -np 2 ringattn serve --socket /tmp/ra.sock --context book=book.h5"},
    {"submit", "Queue a batch job (a TOML run config) on a running service",
     "ringattn submit --socket /tmp/ra.sock --wait configs/smoke.toml"},
    {"query", "Ask a running service: ping, list, status, job_status, drop",
     "ringattn query --socket /tmp/ra.sock status"},
    {"bench", "Benchmarks: the kernel (one process), the ring (under mpirun)",
     "ringattn bench kernel --n 8192 --d 128 --heads 4 --threads 2 --json"},
    {"bench kernel", "Time the fused kernel against this machine's FMA peak",
     "ringattn bench kernel --n 8192 --d 128 --heads 4 --threads 2 --json"},
    {"bench ring", "Time the ring on P ranks against one rank",
     "mpirun -np 2 ringattn bench ring --n 65536 --d 64 --causal --threads 1 --json"},
    {"plan", "Predict a ring run's time, efficiency and memory at each rank count",
     "ringattn plan --n 1048576 --d 128 --heads 8 --kv-heads 2 --causal --bandwidth 100"},
    {"selfcheck", "Check the kernel against the float64 reference on built-in problems",
     "ringattn selfcheck --threads 2"},
    {"help", "Print the help of a subcommand", "ringattn help bench ring"},
};

CLI::App* find_subcommand(CLI::App& app, const std::string& path) {
  CLI::App* at = &app;
  std::size_t start = 0;
  while (at && start < path.size()) {
    const std::size_t end = std::min(path.find(' ', start), path.size());
    const std::string name = path.substr(start, end - start);
    CLI::App* next = nullptr;
    for (CLI::App* s : at->get_subcommands({}))
      if (s->get_name() == name) next = s;
    at = next;
    start = end + 1;
  }
  return at;
}

// Summaries, examples and the listing order (CLI11 lists subcommands in the
// order they were added: they are re-added in kSummaries' order).
void describe_subcommands(CLI::App& app) {
  for (const Summary& s : kSummaries) {
    CLI::App* sub = find_subcommand(app, s.path);
    if (!sub) continue;
    const std::string details = sub->get_description();
    std::string footer;
    if (details != s.line) footer = "\n" + details + "\n";
    sub->footer(footer + "\nExample:\n  " + s.example);
    sub->description(s.line);
  }
}

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

// `ringattn help [SUBCOMMAND...]`: that subcommand's --help.
int print_help(CLI::App& app, const std::vector<std::string>& words) {
  std::string path;
  for (const std::string& w : words) path += (path.empty() ? "" : " ") + w;
  const CLI::App* target = find_subcommand(app, path);
  if (!target) {
    std::fprintf(stderr, "ringattn: usage error: no subcommand '%s' (see --help)\n", path.c_str());
    return ringattn::cli::kUsage;
  }
  // The formatter itself: App::help() of a parent shows its parsed
  // subcommand's help, here `help`'s own.
  const std::string name = path.empty() ? "ringattn" : "ringattn " + path;
  std::fputs(target->get_formatter()->make_help(target, name, CLI::AppFormatMode::Normal).c_str(),
             stdout);
  return 0;
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
  describe_subcommands(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return parse_error(app, e, argc, argv);
  }
  if (app.got_subcommand(help)) return print_help(app, help_path);

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
