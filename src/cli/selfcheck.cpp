// `ringattn selfcheck`: runs the kernel's self-check (job/selfcheck.hpp) and
// prints a line per case; exit 1 if any is beyond tolerance.
#include <cstdio>
#include <memory>

#include "cli/commands.hpp"
#include "cli/option_checks.hpp"
#include "job/selfcheck.hpp"

namespace ringattn::cli {

std::function<int()> add_selfcheck(CLI::App& app) {
  auto threads = std::make_shared<int>(0);
  CLI::App* c =
      app.add_subcommand("selfcheck",
                         "Check the fused kernel against the float64 reference on small built-in "
                         "problems (exit 1 if any is beyond tolerance)");
  c->add_option("--threads", *threads, "Threads (default: this rank's share of the cores)")
      ->check(positive());
  return [threads] {
    const SelfcheckReport r = run_selfcheck(*threads);
    for (const SelfcheckCase& one : r.cases)
      std::printf("%-20s o err %.2e  lse err %.2e  (tolerance %.0e)  %s\n", one.name.c_str(),
                  one.o_err, one.lse_err, one.tolerance, one.ok ? "ok" : "FAIL");
    std::printf("selfcheck: %zu cases, %d failed (kernel: %s)\n", r.cases.size(), r.failures(),
                r.kernel.c_str());
    return r.failures() ? kFailure : kOk;
  };
}

}  // namespace ringattn::cli
