// `ringattn bench ring` (under mpirun): binds the flags to a RingBenchRequest,
// runs the engine (job/bench_ring.hpp) and prints rank 0's record: one JSON
// object with --json, else text. --backward times the backward ring instead.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/bench_record.hpp"
#include "cli/commands.hpp"
#include "cli/mpi_session.hpp"
#include "cli/option_checks.hpp"
#include "core/documents.hpp"
#include "core/shape.hpp"
#include "job/bench_ring.hpp"

namespace ringattn::cli {
namespace {

using BenchRingOptions = BenchOptions<RingBenchRequest>;

void print_text(const nlohmann::json& j) {
  const auto [i, d, s] = record_fields(j);
  const std::vector<double> wait = j.at("exposed_wait_s").get<std::vector<double>>();
  const nlohmann::json& p2p = j.at("p2p");
  std::printf("ring   %s, %lld ranks x %lld threads, %s, %s, N=%lld D=%lld H=%lld/%lld\n",
              s("pass").c_str(), i("ranks"), i("threads_per_rank"), s("partition").c_str(),
              j.at("causal").get<bool>() ? "causal" : "non-causal", i("n"), i("d"), i("heads"),
              i("kv_heads"));
  if (i("documents") > 1)
    std::printf("docs   %lld packed sequences, %.4f of all (query, key) pairs visible\n",
                i("documents"), d("visible_fraction"));
  std::printf("time   %.3f s on %lld ranks, %.1f GFLOP/s of visible pairs", d("seconds"),
              i("ranks"), d("gflops"));
  if (j.contains("seconds_one_rank"))
    std::printf(", %.3f s on one rank: efficiency %.3f", d("seconds_one_rank"), d("efficiency"));
  std::printf("\nbalance %.4f (max/mean attention flops per rank)\n", d("load_balance"));
  std::printf("comm   hop %.1f MB in %.4f s (%.2f GB/s), exposed wait %.4f s, overlap %.3f\n",
              p2p.at("bytes").get<double>() / 1e6, p2p.at("seconds").get<double>(),
              p2p.at("algbw_GBps").get<double>(), *std::max_element(wait.begin(), wait.end()),
              d("overlap"));
  if (j.contains("home_hop_wait_s"))
    std::printf("       last hop (gradients home): waited %.4f s\n", d("home_hop_wait_s"));
}

int run(MpiSession& mpi, const BenchRingOptions& o) {
  const RingBench bench(MPI_COMM_WORLD, o.req);
  mpi.begin_independent_work();
  const std::optional<nlohmann::json> j = bench.run();
  if (!j) return kOk;
  print_record(*j, o.json, print_text);
  return kOk;
}

}  // namespace

std::function<int(MpiSession&)> add_bench_ring(CLI::App& bench) {
  auto opts = std::make_shared<BenchRingOptions>();
  CLI::App* c = bench.add_subcommand(
      "ring",
      "Run the ring on seeded data under mpirun and report, on rank 0: time, per-step compute and "
      "exposed wait, overlap (fraction of transfer time hidden), efficiency = T1 / (P x TP) "
      "against the same problem on one rank with the same threads (measured first, in the same "
      "run), load_balance (max/mean attention flops per rank) and the ring's point-to-point "
      "bandwidth (one hop alone, algbw = busbw = bytes / time as nccl-tests' sendrecv). "
      "--backward: the same for the backward ring.");
  c->add_option("--n", opts->req.n, "Query tokens (whole sequence)")
      ->capture_default_str()
      ->check(positive());
  c->add_option("--n-kv", opts->req.n_kv, "Key/value tokens (default: --n)")->check(positive());
  c->add_option("--d", opts->req.d, "Head dim (1.." + std::to_string(kMaxHeadDim) + ")")
      ->capture_default_str()
      ->check(integer_in(1, kMaxHeadDim));
  c->add_option("--heads", opts->req.heads, "Query heads")
      ->capture_default_str()
      ->check(positive());
  c->add_option("--kv-heads", opts->req.kv_heads, "Key/value heads (default: --heads)")
      ->check(positive());
  c->add_option("--batch", opts->req.batch, "Batch size")->capture_default_str()->check(positive());
  add_choice(*c, "--dtype", opts->req.dtype, {"f32", "f16", "bf16"},
             "Storage type of Q, K, V (K/V travel in it)");
  add_choice(*c, "--compute", opts->req.compute, {"f32", "bf16"},
             "Tile-product precision (see bench kernel)");
  add_choice(*c, "--partition", opts->req.partition,
             {"contiguous", "zigzag", "striped", "balanced"},
             "contiguous, zigzag, striped or balanced (cut by visible work; default: balanced "
             "with --docs, else zigzag when causal, else contiguous)");
  c->add_option("--threads", opts->req.threads,
                "Threads per rank (default: the rank's share of its node's cores)")
      ->check(positive());
  c->add_option("--p2p-iters", opts->req.p2p_iters, "Timed hops for the bandwidth figure")
      ->capture_default_str()
      ->check(positive());
  c->add_option("--seed", opts->req.seed, "Seed of the synthetic Q, K, V")->capture_default_str();
  c->add_flag("--causal", opts->req.causal, "Causal masking");
  c->add_option("--window", opts->req.window,
                "Attention window L[,R] as run's --window (none: every key)")
      ->capture_default_str();
  c->add_option("--docs", opts->req.docs,
                "Packed sequences over the N tokens: lengths L1,L2,... or longtail:S (S "
                "heavy-tailed lengths), document masking as run's cu_seqlens; --batch 1")
      ->type_name(kPackedOffsetsMetavar);
  // Callbacks, not "!--no-x" flags: those print as "--no-x{false}" in --help.
  c->add_flag_callback(
      "--no-baseline", [opts] { opts->req.baseline = false; },
      "Skip the one-rank run (no efficiency figure)");
  c->add_flag_callback(
      "--no-poll", [opts] { opts->req.poll = false; },
      "Do not poll the transfer from the kernel (to measure what polling hides)");
  c->add_flag("--backward", opts->req.backward,
              "Time the backward ring instead (dQ at home, each block's dK/dV travelling behind "
              "it and home at the end), after an untimed forward ring for o and lse, on a seeded "
              "dO; T1 is the one-rank backward, flops 2.5x the forward's; the hop is timed at "
              "the largest message (a block and gradients behind it). --compute f32 only (else "
              "exit code 2)");
  c->add_flag("--json", opts->json,
              "Print one JSON object instead of text (\"pass\": \"forward\" or \"backward\")");
  return [opts](MpiSession& mpi) { return run(mpi, *opts); };
}

}  // namespace ringattn::cli
