// `ringattn plan`: binds the flags to the ring's model (job/plan.hpp) and
// prints its table or JSON (rank 0); under mpirun with --measure-link the
// ranks first time the link between them.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <sstream>

#include "cli/commands.hpp"
#include "cli/mpi_session.hpp"
#include "cli/option_checks.hpp"
#include "core/cpu.hpp"
#include "core/error.hpp"
#include "core/host_memory.hpp"
#include "core/shape.hpp"
#include "job/plan.hpp"
#include "job/setting.hpp"

namespace ringattn::cli {
namespace {

struct PlanOptions {
  PlanProblem problem;
  PlanMachine machine;
  std::string dtype = "f32", partition = "auto", ranks = "1,2,4,8,16,32,64,128,256,512,1024,4096";
  double rate = 0, latency_us = 2, memory_gb = 0;
  bool json = false, measure_link = false;
};

std::vector<int> parse_ranks(const std::string& text) {
  std::vector<int> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    out.push_back(
        static_cast<int>(checked_integer_from_text(item, "plan --ranks", {.lo = 1, .hi = 65536})));
  }
  RA_CHECK(!out.empty(), usage, "plan --ranks: no rank counts");
  return out;
}

void print_table(const Plan& plan) {
  const PlanProblem& p = plan.problem;
  const PlanMachine& m = plan.machine;
  std::printf(
      "problem  B=%lld H=%lld/%lld N=%lld N_kv=%lld D=%lld %s %s%s, %lld K/V heads per chunk\n",
      static_cast<long long>(p.batch), static_cast<long long>(p.heads),
      static_cast<long long>(p.kv_heads), static_cast<long long>(p.n),
      static_cast<long long>(p.n_kv), static_cast<long long>(p.d), dtype_name(p.dtype),
      p.causal ? "causal" : "non-causal", p.backward ? ", backward" : "",
      static_cast<long long>(p.kv_heads_per_chunk));
  std::printf(
      "machine  %.1f GFLOP/s per rank (%s), %d threads; link %.2f Gbit/s, %.1f us (%s); "
      "%.1f GB and %d cores per node, %d ranks per node\n",
      m.rate_gflops, m.rate_source.c_str(), m.threads, m.bandwidth_gbps, m.latency_s * 1e6,
      m.link_source.c_str(), m.memory_node_gb, m.cores_per_node, m.ranks_per_node);
  std::printf("partition %s\n", plan.partition_reason.c_str());
  std::printf("a hop hides under a step from %.0f tokens per rank\n\n", plan.min_tokens_to_hide);
  std::printf("%6s %12s %12s %10s %10s %12s %9s %7s %11s  %s\n", "ranks", "tokens/rank",
              "step comp s", "hop s", "exposed s", "predicted s", "effic.", "balance", "MiB/rank",
              "fits");
  for (const PlanRow& r : plan.rows) {
    if (r.tokens_per_rank == 0) {
      std::printf("%6d %12s %12s %10s %10s %12s %9s %7s %11s  no: %s\n", r.ranks, "-", "-", "-",
                  "-", "-", "-", "-", "-", r.why.c_str());
      continue;
    }
    std::printf("%6d %12lld %12.4g %10.4g %10.4g %12.4g %9.3f %7.3f %11.1f  %s%s\n", r.ranks,
                static_cast<long long>(r.tokens_per_rank), r.step_compute_s, r.hop_s, r.exposed_s,
                r.predicted_s, r.efficiency, r.load_balance,
                static_cast<double>(r.memory_bytes) / (1 << 20),
                r.fits ? "yes" : "no: ", r.why.c_str());
  }
}

int plan_on_rank0(PlanOptions& o, const std::vector<int>& ranks) {
  PlanProblem& q = o.problem;
  PlanMachine& m = o.machine;
  // The node's cores: under mpirun (--measure-link) this rank's own
  // binding would say 1.
  if (m.cores_per_node == 0) m.cores_per_node = online_cores();
  m.memory_node_gb =
      o.memory_gb > 0 ? o.memory_gb : static_cast<double>(available_memory_bytes()) / 1e9;
  if (o.rate > 0) {
    m.rate_gflops = o.rate;
    m.rate_source = "given";
  } else {
    // A step's block at the largest rank count that still has a few
    // thousand tokens per rank: where the hop question matters.
    const std::int64_t tokens = q.n / std::max(1, ranks.back());
    m.rate_gflops = measure_kernel_rate(
        q, static_cast<int>(std::min<std::int64_t>(std::max<std::int64_t>(tokens, 4096), 8192)),
        m.threads);
    m.rate_source = "measured here";
  }
  const Plan plan = make_plan(q, m, ranks);
  if (o.json)
    std::printf("%s\n", plan_json(plan).dump().c_str());
  else
    print_table(plan);
  return kOk;
}

// Every rank checks the options alike; with --measure-link they all time
// the ring's hop; rank 0 alone measures the kernel and prints.
int plan(const MpiSession& mpi, PlanOptions& o) {
  PlanProblem& q = o.problem;
  PlanMachine& m = o.machine;
  q.dtype = parse_dtype(o.dtype);
  if (o.partition != "auto") q.partition = parse_partition(o.partition);
  const std::vector<int> ranks = parse_ranks(o.ranks);
  m.latency_s = o.latency_us * 1e-6;
  if (o.measure_link) {
    // One chunk's block at the largest rank count (where the hop question
    // matters), 1 to 64 MiB.
    const std::int64_t tokens = (q.n_kv > 0 ? q.n_kv : q.n) / std::max(1, ranks.back());
    const double bytes = std::clamp(hop_bytes(q, tokens), 1048576.0, 67108864.0);
    const MeasuredLink l = measure_link(MPI_COMM_WORLD, static_cast<std::uint64_t>(bytes));
    m.bandwidth_gbps = l.bandwidth_gbps;
    m.latency_s = l.latency_s;
    m.link_source = "measured between " + std::to_string(mpi.size()) + " ranks, " +
                    std::to_string(l.bytes >> 10) + " KiB hop";
  }
  return on_rank0(mpi, [&] { return plan_on_rank0(o, ranks); });
}

}  // namespace

std::function<int(MpiSession&)> add_plan(CLI::App& app) {
  auto o = std::make_shared<PlanOptions>();
  PlanProblem& p = o->problem;
  CLI::App* c = app.add_subcommand(
      "plan",
      "Predict a ring run at each rank count from a model of the ring's steps: per-step compute "
      "(the partition's exact visible pairs at the kernel's rate), hop time (latency + block "
      "bytes / bandwidth), exposed communication, total time, efficiency T1 / (P x TP), memory "
      "per rank (preflight's estimate) and whether it fits. The kernel rate is measured here "
      "(bench kernel on a step's block, at most 8192 tokens) unless --rate gives it. I/O and "
      "network contention are not modelled (see docs/scaling.md).");
  c->add_option("--n", p.n, "Query tokens (whole sequence)")->required()->check(positive());
  c->add_option("--n-kv", p.n_kv, "Key/value tokens (default: --n)")->check(positive());
  c->add_option("--d", p.d, "Head dim (1..256)")
      ->capture_default_str()
      ->check(integer_in(1, kMaxHeadDim));
  c->add_option("--heads", p.heads, "Query heads")->capture_default_str()->check(positive());
  c->add_option("--kv-heads", p.kv_heads, "Key/value heads (default: --heads)")->check(positive());
  c->add_option("--batch", p.batch, "Batch size")->capture_default_str()->check(positive());
  add_choice(*c, "--dtype", o->dtype, {"f32", "f16", "bf16"},
             "Storage type of Q, K, V (what travels)");
  c->add_flag("--causal", p.causal, "Causal masking");
  c->add_flag("--backward", p.backward, "The backward ring (2.5x the flops; dK, dV travel too)");
  c->add_option("--kv-heads-per-chunk", p.kv_heads_per_chunk, "K/V heads per streamed chunk")
      ->capture_default_str()
      ->check(positive());
  add_choice(*c, "--partition", o->partition, {"auto", "contiguous", "zigzag", "striped"},
             "auto (zigzag when causal, else contiguous), contiguous, zigzag or striped");
  c->add_option("--ranks", o->ranks, "Rank counts, comma-separated")->capture_default_str();
  c->add_option("--rate", o->rate,
                "A rank's kernel GFLOP/s (default: measured here with --threads threads)")
      ->check(positive());
  c->add_option("--threads", o->machine.threads, "Threads per rank (measurement and scratch)")
      ->capture_default_str()
      ->check(positive());
  CLI::Option* bandwidth = c->add_option("--bandwidth", o->machine.bandwidth_gbps,
                                         "Link bandwidth, Gbit/s per direction")
                               ->default_val(100.0)
                               ->capture_default_str()
                               ->check(positive());
  CLI::Option* latency =
      c->add_option("--latency", o->latency_us, "Link latency per hop, microseconds")
          ->capture_default_str()
          ->check(non_negative());
  c->add_flag("--measure-link", o->measure_link,
              "Measure the link instead (under mpirun, 2 or more ranks placed as the run's: every "
              "rank sends a hop to the next at once, as the ring does; latency from 8 bytes, "
              "bandwidth from one chunk's block at the largest --ranks, 1-64 MiB)")
      ->excludes(bandwidth)
      ->excludes(latency);
  c->add_option("--memory-gb", o->memory_gb, "Memory per node, GB (default: this machine's)")
      ->check(positive());
  c->add_option("--ranks-per-node", o->machine.ranks_per_node, "Ranks sharing a node's memory")
      ->capture_default_str()
      ->check(positive());
  c->add_option("--cores-per-node", o->machine.cores_per_node,
                "Cores per node: ranks x threads beyond it share them, each at that share of "
                "the rate (default: this machine's cores)")
      ->check(positive());
  c->add_flag("--json", o->json, "Print one JSON object instead of the table");
  return [o](MpiSession& mpi) { return plan(mpi, *o); };
}

}  // namespace ringattn::cli
