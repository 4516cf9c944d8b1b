// `ringattn run`: the job users launch with mpirun or srun. Settings come
// from defaults, then --config FILE.toml, then flags (flags win).
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.hpp"
#include "cli/config_file.hpp"
#include "cli/mpi_session.hpp"
#include "job/job.hpp"
#include "job/metrics.hpp"
#include "job/stop_request.hpp"

namespace ringattn::cli {
namespace {

struct RunFlags {
  std::string config, input, output, q, k, v, partition, metrics, o_dtype, compute, backend,
      transport;
  bool causal = false, no_causal = false, lse = false, overwrite = false, print_config = false,
       allow_nonfinite = false, resume = false;
  double comm_timeout = 0, memory_limit_mb = 0, checkpoint_interval = 0;
  int threads = 0;
  std::int64_t kv_heads_per_chunk = 0;
  float scale = 0;
  double progress_interval = 0;
  CLI::App* app = nullptr;
  bool given(const char* name) const { return app->count(name) > 0; }
};

JobConfig effective_config(const RunFlags& f) {
  JobConfig c;
  if (!f.config.empty()) load_config_file(f.config, c);
  if (f.given("--input")) c.input = f.input;
  if (f.given("--output")) c.output = f.output;
  if (f.given("--q-name")) c.q_name = f.q;
  if (f.given("--k-name")) c.k_name = f.k;
  if (f.given("--v-name")) c.v_name = f.v;
  if (f.given("--causal")) c.causal = true;
  if (f.given("--no-causal")) c.causal = false;
  if (f.given("--partition"))
    c.partition =
        f.partition == "auto" ? std::nullopt : std::optional(parse_partition(f.partition));
  if (f.given("--lse")) c.lse = true;
  if (f.given("--overwrite")) c.overwrite = true;
  if (f.given("--metrics")) c.metrics = f.metrics;
  if (f.given("--out-dtype")) c.o_dtype = f.o_dtype;
  if (f.given("--compute")) c.compute = parse_compute_type(f.compute.c_str());
  if (f.given("--scale")) c.scale = f.scale;
  if (f.given("--threads")) c.threads = f.threads;
  if (f.given("--kv-heads-per-chunk")) c.kv_heads_per_chunk = f.kv_heads_per_chunk;
  if (f.given("--progress-interval")) c.progress_interval = f.progress_interval;
  if (f.given("--allow-nonfinite")) c.allow_nonfinite = true;
  if (f.given("--backend")) c.backend = f.backend;
  if (f.given("--transport")) c.transport = f.transport;
  if (f.given("--comm-timeout")) c.comm_timeout = f.comm_timeout;
  if (f.given("--memory-limit-mb")) c.memory_limit_mb = f.memory_limit_mb;
  if (f.given("--resume")) c.resume = true;
  if (f.given("--checkpoint-interval")) c.checkpoint_interval = f.checkpoint_interval;
  return c;
}

int run(MpiSession& mpi, const RunFlags& f) {
  const JobConfig cfg = effective_config(f);
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
                   "ringattn: stopped by %s after %lld of %lld chunks; the partial output is "
                   "kept in %s; continue with the same command and --resume\n",
                   stop_signal_name(r.stopped_by), static_cast<long long>(r.chunks_done),
                   static_cast<long long>(r.chunks), r.partial_path.c_str());
    return kStopped;
  }
  if (mpi.rank() == 0) {
    if (cfg.resume)
      std::printf(r.chunks_resumed > 0
                      ? "ringattn: resumed from %s: %lld of %lld chunks were already done\n"
                      : "ringattn: --resume: no partial output %s, ran from the beginning "
                        "(%lld of %lld chunks done before)\n",
                  r.partial_path.c_str(), static_cast<long long>(r.chunks_resumed),
                  static_cast<long long>(r.chunks));
    double flops = 0, io = 0;
    for (const auto& m : r.per_rank) {
      flops += m.flops;
      io = std::max(io, m.io_read_s + m.io_write_s);
    }
    std::printf(
        "ringattn: wrote %s: o [%lld, %lld, %lld, %lld]%s, %s, %s partition, %d ranks x %d "
        "threads, %.3f s (%.1f GFLOP/s, I/O %.1f%%)\n",
        cfg.output.c_str(), static_cast<long long>(r.input.B), static_cast<long long>(r.input.Hq),
        static_cast<long long>(r.input.Nq), static_cast<long long>(r.input.D),
        cfg.lse ? " and lse" : "", cfg.causal ? "causal" : "non-causal",
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
  c->add_option("--config", f->config, "TOML configuration (see configs/)")
      ->check(CLI::ExistingFile);
  c->add_option("--input", f->input, "Input HDF5 file");
  c->add_option("--output", f->output, "Output HDF5 file (never replaced without --overwrite)");
  c->add_option("--q-name", f->q, "Dataset name of the queries [default: q]");
  c->add_option("--k-name", f->k, "Dataset name of the keys [default: k]");
  c->add_option("--v-name", f->v, "Dataset name of the values [default: v]");
  c->add_flag("--causal", f->causal, "Causal masking: token j visible to token i when j <= i");
  c->add_flag("--no-causal", f->no_causal, "No masking (overrides the config)");
  c->add_option("--partition", f->partition,
                "How tokens are split over ranks [default: auto = zigzag when causal, else "
                "contiguous]")
      ->check(CLI::IsMember({"auto", "contiguous", "zigzag", "striped"}));
  c->add_flag("--lse", f->lse, "Also write lse [B, H, N] (f32, natural log)");
  c->add_option("--out-dtype", f->o_dtype, "Type of o: f32, or input (the input's) [default: f32]")
      ->check(CLI::IsMember({"f32", "input"}));
  c->add_flag("--overwrite", f->overwrite, "Replace an existing output file");
  c->add_option("--compute", f->compute, "Tile-product precision [default: f32]")
      ->check(CLI::IsMember({"f32", "bf16"}));
  c->add_option("--scale", f->scale, "Softmax scale [default: 1/sqrt(D)]")
      ->check(CLI::PositiveNumber);
  c->add_option("--threads", f->threads,
                "Threads per rank [default: the rank's share of its node's cores]")
      ->check(CLI::Range(1, 4096));
  c->add_option("--kv-heads-per-chunk", f->kv_heads_per_chunk,
                "K/V heads (with their query heads) per streamed chunk; memory grows with it "
                "[default: 1]")
      ->check(CLI::PositiveNumber);
  c->add_option("--metrics", f->metrics, "Write per-rank metrics JSON to this file");
  c->add_option("--progress-interval", f->progress_interval,
                "Seconds between progress lines when stderr is not a terminal [default: 5]")
      ->check(CLI::PositiveNumber);
  c->add_flag("--allow-nonfinite", f->allow_nonfinite,
              "Accept NaN or Inf in q, k, v (default: refuse, naming the first bad element)");
  c->add_option("--backend", f->backend,
                "Where the attention kernel runs: cpu, or cuda (one GPU per rank, chosen by "
                "node-local rank) [default: cpu]")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  c->add_option("--transport", f->transport,
                "How K/V blocks travel: mpi, nccl (cuda backend only), or auto = nccl with "
                "cuda, else mpi [default: auto]")
      ->check(CLI::IsMember({"auto", "mpi", "nccl"}));
  c->add_option("--comm-timeout", f->comm_timeout,
                "Seconds a rank may wait on a peer before the whole job is aborted with exit "
                "code 6; must exceed the longest ring step; 0 = wait forever [default: 1800]")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--memory-limit-mb", f->memory_limit_mb,
                "Per-rank memory budget in MiB, checked before anything is read [default: 0 = "
                "the rank's share of its node's memory]")
      ->check(CLI::NonNegativeNumber);
  c->add_flag("--resume", f->resume,
              "Continue an interrupted run (exit code 7) from its partial output, after "
              "checking that the input, settings and ranks are the same; without a partial "
              "output, start from the beginning");
  c->add_option("--checkpoint-interval", f->checkpoint_interval,
                "Seconds between progress records in the partial output: a crash loses at most "
                "this much finished work (a stop signal records at once); 0 = after every "
                "chunk [default: 10]")
      ->check(CLI::NonNegativeNumber);
  c->add_flag("--print-config", f->print_config,
              "Print the effective configuration (TOML) and exit");
  return [f](MpiSession& mpi) { return run(mpi, *f); };
}

}  // namespace ringattn::cli
