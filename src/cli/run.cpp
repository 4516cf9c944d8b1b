// `ringattn run`: the job users launch with mpirun or srun. Settings come
// from defaults, then --config FILE.toml, then flags (flags win).
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <type_traits>

#include "cli/commands.hpp"
#include "cli/mpi_session.hpp"
#include "comm/agree.hpp"
#include "job/config_toml.hpp"
#include "job/job.hpp"
#include "job/metrics.hpp"
#include "job/stop_request.hpp"

namespace ringattn::cli {
namespace {

// The flags of `ringattn run`: one per setting of the table (a switch for a
// bool, text for the rest, converted and checked by the table), plus
// --config and --print-config.
struct RunFlags {
  std::string config;
  bool print_config = false;
  std::map<std::string, std::string> text;  // by flag: the text given
  CLI::App* app = nullptr;
  bool given(const char* name) const { return app->count(name) > 0; }
};

// Defaults, then the config file, then the flags given (a flag not given
// leaves the file's value).
JobConfig effective_config(const RunFlags& f) {
  JobConfig c;
  if (!f.config.empty()) load_config_file(f.config, c);
  for_each_setting([&](const auto& s) {
    using T = typename std::decay_t<decltype(s)>::Value;
    if constexpr (std::is_same_v<T, bool>) {
      if (f.given(s.flag)) c.*s.member = true;
      if (s.off_flag && f.given(s.off_flag)) c.*s.member = false;
    } else if (f.given(s.flag)) {
      assign(c, s, raw_from_text(s, f.text.at(s.flag), s.flag), s.flag);
    }
  });
  return c;
}

void add_setting_flags(CLI::App& c, RunFlags& f) {
  for_each_setting([&](const auto& s) {
    using T = typename std::decay_t<decltype(s)>::Value;
    if constexpr (std::is_same_v<T, bool>) {
      CLI::Option* on = c.add_flag(s.flag)->description(setting_help(s));
      if (s.off_flag)
        c.add_flag(s.off_flag)
            ->description(std::string("Turns ") + s.flag + " off (overrides the config)")
            ->excludes(on);
    } else {
      c.add_option(s.flag, f.text[s.flag], setting_help(s))->type_name(setting_metavar(s));
    }
  });
}

int run(MpiSession& mpi, const RunFlags& f) {
  // Agreed: ranks of an MPMD launch may have different flags, and one that
  // fails alone must not leave the others waiting in run_job.
  JobConfig cfg;
  agree(MPI_COMM_WORLD, [&] { cfg = effective_config(f); });
  if (f.print_config) {
    if (mpi.rank() == 0) std::printf("%s", config_toml(cfg).c_str());
    return kOk;
  }
  // SIGTERM/SIGINT/SIGUSR1 stop the job at the next chunk boundary (main()
  // installed the handlers before MPI started; again here for other callers).
  install_stop_handlers();
  const JobReport r = run_job(MPI_COMM_WORLD, cfg);
  if (r.stopped_by) {
    if (mpi.rank() == 0)
      std::fprintf(stderr,
                   "ringattn: stopped by %s after %lld of %lld chunks%s; the partial output is "
                   "kept in %s; continue with the same command and --resume\n",
                   stop_signal_name(r.stopped_by), static_cast<long long>(r.chunks_done),
                   static_cast<long long>(r.chunks),
                   r.steps_done > 0 ? (" and " + std::to_string(r.steps_done) + " of " +
                                       std::to_string(r.ranks) + " ring steps of the next")
                                          .c_str()
                                    : "",
                   r.partial_path.c_str());
    return kStopped;
  }
  if (mpi.rank() == 0) {
    if (cfg.resume && r.resumed)
      std::printf("ringattn: resumed from %s: %lld of %lld chunks%s were already done\n",
                  r.partial_path.c_str(), static_cast<long long>(r.chunks_resumed),
                  static_cast<long long>(r.chunks),
                  r.steps_resumed > 0 ? (" and " + std::to_string(r.steps_resumed) + " of " +
                                         std::to_string(r.ranks) + " ring steps of the next")
                                            .c_str()
                                      : "");
    else if (cfg.resume)
      std::printf("ringattn: --resume: no partial output %s, ran from the beginning\n",
                  r.partial_path.c_str());
    double flops = 0, io = 0;
    for (const auto& m : r.per_rank) {
      flops += m.flops;
      io = std::max(io, m.io_read_s + m.io_write_s);
    }
    std::printf(
        "ringattn: wrote %s: o [%lld, %lld, %lld, %lld]%s, %s%s%s, %s partition, %d ranks x %d "
        "threads, %.3f s (%.1f GFLOP/s, I/O %.1f%%)\n",
        cfg.output.c_str(), static_cast<long long>(r.input.shape.batch),
        static_cast<long long>(r.input.shape.heads_q),
        static_cast<long long>(r.input.shape.tokens_q),
        static_cast<long long>(r.input.shape.head_dim),
        cfg.backward ? ", lse, dq, dk and dv"
        : cfg.lse    ? " and lse"
                     : "",
        cfg.causal ? "causal" : "non-causal",
        cfg.window.bounded() ? (", window " + cfg.window.text()).c_str() : "",
        r.documents.is_packed()
            ? (", " + std::to_string(r.documents.count()) + " packed sequences").c_str()
            : "",
        partition_name(r.partition), r.ranks, r.threads, r.wall_s, flops / r.wall_s / 1e9,
        100.0 * io / r.wall_s);
    if (!cfg.metrics.empty()) write_metrics(cfg, r);
  }
  return kOk;
}

}  // namespace

std::function<int(MpiSession&)> add_run(CLI::App& app) {
  auto f = std::make_shared<RunFlags>();
  CLI::App* c = app.add_subcommand(
      "run",
      "Compute exact attention for an HDF5 input across the MPI ranks and write an HDF5 output "
      "(launch with mpirun or srun). Input datasets q, k, v shaped [B, H, N, D], f32 or f16; k "
      "and v may have fewer heads (grouped-query) and another N (cross-attention). Output: o "
      "shaped like q and, with --lse, lse [B, H, N] f32, written to a temporary file and renamed "
      "when complete. Settings: defaults, then --config, then flags.");
  f->app = c;
  CLI::Validator exists = CLI::ExistingFile;
  exists.description("");  // the metavar says it: FILE.toml, not TEXT:FILE
  c->add_option("--config", f->config, "TOML configuration (see configs/)")
      ->check(exists)
      ->type_name("FILE.toml");
  add_setting_flags(*c, *f);
  c->add_flag("--print-config", f->print_config,
              "Print the effective configuration (TOML) and exit");
  return [f](MpiSession& mpi) { return run(mpi, *f); };
}

}  // namespace ringattn::cli
