// The ring's performance model (see plan.hpp).
#include "job/plan.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "core/visibility.hpp"
#include "io/input_file.hpp"
#include "job/bench_kernel.hpp"
#include "job/bench_ring.hpp"
#include "job/job_config.hpp"
#include "job/preflight.hpp"

namespace ringattn {
namespace {

// sum over i in [0, m) of clamp(i + c0, 0, k): the keys each of m queries
// sees in a run of k keys, when query i sees the first i + c0 of them.
double clamped_ramp(std::int64_t m, std::int64_t k, std::int64_t c0) {
  const std::int64_t lo = std::max<std::int64_t>(0, -c0);       // first i with a key
  const std::int64_t full = std::max<std::int64_t>(0, k - c0);  // first i with all k
  const std::int64_t hi = std::min(m, full);
  double s = 0;
  if (hi > lo)
    s += static_cast<double>(hi - lo) * static_cast<double>(c0) +
         0.5 * static_cast<double>(lo + hi - 1) * static_cast<double>(hi - lo);
  if (m > full) s += static_cast<double>(k) * static_cast<double>(m - full);
  return s;
}

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}

// (query, key) pairs with key <= query between two runs of positions: query
// i at q.first + i q.stride, key j at k.first + j k.stride. Both runs of one
// stride (what every partition gives) in closed form.
double causal_pairs(const PositionSegment& q, const PositionSegment& k) {
  std::int64_t sq = q.count == 1 ? k.stride : q.stride;
  const std::int64_t sk = k.count == 1 ? sq : k.stride;
  if (q.count == 1) sq = sk;
  if (sq == sk)  // keys <= query i: floor((q.first - k.first) / s) + i + 1
    return clamped_ramp(q.count, k.count, floor_div(q.first - k.first, sk) + 1);
  double s = 0;  // mixed strides: only for short runs
  for (std::int64_t i = 0; i < q.count; ++i) {
    const std::int64_t x = q.first + i * q.stride;
    if (x >= k.first) s += static_cast<double>(std::min(k.count, (x - k.first) / k.stride + 1));
  }
  return s;
}

double visible_pairs(const Positions& q, const Positions& k, bool causal) {
  if (!causal) return static_cast<double>(q.size()) * static_cast<double>(k.size());
  double s = 0;
  for (const PositionSegment& a : q.segments())
    for (const PositionSegment& b : k.segments()) s += causal_pairs(a, b);
  return s;
}

void check_problem(const PlanProblem& p, const PlanMachine& m) {
  RA_CHECK(p.n >= 1 && p.n_kv >= 1, usage, "plan: --n and --n-kv must be >= 1");
  RA_CHECK(p.batch >= 1 && p.heads >= 1 && p.kv_heads >= 1 && p.heads % p.kv_heads == 0, usage,
           "plan: heads ", p.heads, " must be a multiple of kv heads ", p.kv_heads);
  RA_CHECK(p.d >= 1 && p.d <= kMaxHeadDim, usage, "plan: --d ", p.d, " outside 1..", kMaxHeadDim);
  RA_CHECK(!p.causal || p.n == p.n_kv, usage,
           "plan: --causal needs N_kv = N (self-attention), got ", p.n, " and ", p.n_kv);
  RA_CHECK(p.kv_heads_per_chunk >= 1, usage, "plan: --kv-heads-per-chunk must be >= 1");
  RA_CHECK(p.partition != PartitionKind::balanced, usage,
           "plan: balanced is for packed documents, which the model does not take yet");
  RA_CHECK(m.rate_gflops > 0 && std::isfinite(m.rate_gflops), usage,
           "plan: the kernel rate must be > 0 GFLOP/s");
  RA_CHECK(
      m.bandwidth_gbps > 0 && m.latency_s >= 0 && m.memory_node_gb > 0 && m.ranks_per_node >= 1,
      usage, "plan: bandwidth and memory must be > 0, latency >= 0, ranks per node >= 1");
}

// The memory preflight would reckon for this problem at `parts`.
std::int64_t rank_memory(const PlanProblem& p, const RingPartitions& parts, int threads) {
  JobConfig cfg;
  cfg.causal = p.causal;
  cfg.backward = p.backward;
  cfg.kv_heads_per_chunk = p.kv_heads_per_chunk;
  cfg.threads = threads;
  InputInfo info;
  info.shape = {p.batch, p.heads, p.kv_heads, p.n, p.n_kv, p.d};
  info.dtype = p.dtype;
  const RankMemory m = estimate_rank_memory(cfg, info, parts);
  return m.overflow ? INT64_MAX : m.total;
}

struct ChunkGeometry {
  std::int64_t hk = 1, hq = 1;  // K/V heads and query heads of one chunk
  double chunks = 1;            // batches x K/V head groups
  double flops_per_pair = 0;    // 4 D hq (x 2.5 backward)
  double hop_bytes_per_token = 0;
};

ChunkGeometry chunk_geometry(const PlanProblem& p) {
  ChunkGeometry g;
  g.hk = std::min(p.kv_heads_per_chunk, p.kv_heads);
  g.hq = g.hk * (p.heads / p.kv_heads);
  g.chunks = static_cast<double>(p.batch) * static_cast<double>((p.kv_heads + g.hk - 1) / g.hk);
  g.flops_per_pair = 4.0 * static_cast<double>(p.d * g.hq) * (p.backward ? 2.5 : 1.0);
  const double es = static_cast<double>(dtype_size(p.dtype));
  // K then V in the storage type; a backward block also carries f32 dK, dV.
  g.hop_bytes_per_token = 2.0 * static_cast<double>(g.hk * p.d) * (es + (p.backward ? 4.0 : 0.0));
  return g;
}

// A rank's flops per second: the kernel's rate, shared when the node's
// ranks ask for more threads than it has cores.
double effective_rate(const PlanMachine& m) {
  const double want = static_cast<double>(m.ranks_per_node) * m.threads;
  return m.cores_per_node > 0 && want > m.cores_per_node ? m.rate_gflops * m.cores_per_node / want
                                                         : m.rate_gflops;
}

PlanRow plan_row(const PlanProblem& p, const PlanMachine& m, PartitionKind kind, int P) {
  PlanRow row;
  row.ranks = P;
  row.partition = partition_name(kind);
  if (p.n < P || p.n_kv < P) {
    row.fits = false;
    row.why = "fewer tokens than ranks";
    return row;
  }
  const ChunkGeometry g = chunk_geometry(p);
  const RingPartitions parts =
      ring_partitions(kind, p.n, p.n_kv, P, Documents{}, Visibility::of(p.causal));
  row.tokens_per_rank = parts.q.max_local_size();
  const double rate = effective_rate(m) * 1e9;
  const double bw = m.bandwidth_gbps * 1e9 / 8.0;
  row.hop_s = P > 1 ? m.latency_s + g.hop_bytes_per_token *
                                        static_cast<double>(parts.kv.max_local_size()) / bw
                    : 0.0;
  std::vector<Positions> qpos, kpos;
  for (int r = 0; r < P; ++r) {
    qpos.push_back(parts.q.positions(r));
    kpos.push_back(parts.kv.positions(r));
  }
  std::vector<double> rank_flops(static_cast<std::size_t>(P), 0.0);
  double chunk_s = 0, exposed = 0, total_flops = 0;
  for (int s = 0; s < P; ++s) {
    double slowest = 0;
    for (int r = 0; r < P; ++r) {
      const double f = g.flops_per_pair * visible_pairs(qpos[r], kpos[(r - s + P) % P], p.causal);
      rank_flops[static_cast<std::size_t>(r)] += f;
      total_flops += f;
      slowest = std::max(slowest, f / rate);
    }
    row.step_compute_s = std::max(row.step_compute_s, slowest);
    const double step = s < P - 1 ? std::max(slowest, row.hop_s) : slowest;
    exposed += step - slowest;
    chunk_s += step;
  }
  row.predicted_s = g.chunks * chunk_s;
  row.exposed_s = g.chunks * exposed;
  row.t1_s = g.chunks * total_flops / rate;
  row.efficiency = row.predicted_s > 0 ? row.t1_s / (P * row.predicted_s) : 1.0;
  const double mean = total_flops / P;
  row.load_balance = mean > 0 ? *std::max_element(rank_flops.begin(), rank_flops.end()) / mean : 1;
  row.memory_bytes = rank_memory(p, parts, m.threads);
  const double budget = m.memory_node_gb * 1e9 / m.ranks_per_node;
  if (static_cast<double>(row.memory_bytes) > budget) {
    row.fits = false;
    row.why = "needs " + std::to_string(row.memory_bytes / (1 << 20)) + " MiB per rank, " +
              std::to_string(static_cast<std::int64_t>(budget) / (1 << 20)) + " MiB available";
  }
  return row;
}

}  // namespace

Plan make_plan(const PlanProblem& problem, const PlanMachine& machine,
               const std::vector<int>& ranks) {
  Plan plan;
  plan.problem = problem;
  PlanProblem& p = plan.problem;
  if (p.kv_heads == 0) p.kv_heads = p.heads;
  if (p.n_kv == 0) p.n_kv = p.n;
  plan.machine = machine;
  check_problem(p, machine);
  RA_CHECK(!ranks.empty(), usage, "plan: no rank counts");
  for (int P : ranks)
    RA_CHECK(P >= 1 && P <= 65536, usage, "plan: rank count ", P, " outside 1..65536");

  const PartitionKind kind = p.partition ? *p.partition : default_partition(p.causal);
  plan.partition_reason =
      p.partition ? "as asked"
      : p.causal  ? "zigzag: every rank gets an early and a late chunk, so causal work is balanced "
                    "at every step"
                  : "contiguous: without a mask every split is balanced, and each rank reads one "
                    "run of tokens";
  for (int P : ranks) plan.rows.push_back(plan_row(p, machine, kind, P));

  // One step of n tokens per rank: a n^2 (balanced causal: half) flops
  // against latency + b n bytes.
  const ChunkGeometry g = chunk_geometry(p);
  const double a = g.flops_per_pair * (p.causal ? 0.5 : 1.0) / (effective_rate(machine) * 1e9);
  const double b = g.hop_bytes_per_token / (machine.bandwidth_gbps * 1e9 / 8.0);
  plan.min_tokens_to_hide = (b + std::sqrt(b * b + 4 * a * machine.latency_s)) / (2 * a);
  return plan;
}

nlohmann::json plan_json(const Plan& plan) {
  const PlanProblem& p = plan.problem;
  const PlanMachine& m = plan.machine;
  nlohmann::json j = {
      {"problem",
       {{"batch", p.batch},
        {"heads", p.heads},
        {"kv_heads", p.kv_heads},
        {"n", p.n},
        {"n_kv", p.n_kv},
        {"d", p.d},
        {"dtype", dtype_name(p.dtype)},
        {"causal", p.causal},
        {"backward", p.backward},
        {"kv_heads_per_chunk", p.kv_heads_per_chunk}}},
      {"machine",
       {{"rate_gflops", m.rate_gflops},
        {"rate_source", m.rate_source},
        {"bandwidth_gbps", m.bandwidth_gbps},
        {"latency_s", m.latency_s},
        {"link_source", m.link_source},
        {"memory_node_gb", m.memory_node_gb},
        {"ranks_per_node", m.ranks_per_node},
        {"threads_per_rank", m.threads},
        {"cores_per_node", m.cores_per_node}}},
      {"partition_reason", plan.partition_reason},
      {"min_tokens_per_rank_to_hide", plan.min_tokens_to_hide},
      {"rows", nlohmann::json::array()},
  };
  for (const PlanRow& r : plan.rows)
    j["rows"].push_back({{"ranks", r.ranks},
                         {"tokens_per_rank", r.tokens_per_rank},
                         {"partition", r.partition},
                         {"step_compute_s", r.step_compute_s},
                         {"hop_s", r.hop_s},
                         {"exposed_s", r.exposed_s},
                         {"predicted_s", r.predicted_s},
                         {"t1_s", r.t1_s},
                         {"efficiency", r.efficiency},
                         {"load_balance", r.load_balance},
                         {"memory_bytes_per_rank", r.memory_bytes},
                         {"fits", r.fits},
                         {"why", r.why}});
  return j;
}

MeasuredLink measure_link(MPI_Comm comm, std::uint64_t bytes, int iters) {
  int size = 1;
  RA_MPI_CHECK(MPI_Comm_size(comm, &size));
  RA_CHECK(size >= 2, usage, "plan --measure-link: needs 2 or more ranks (mpirun -np 2 ...), got ",
           size);
  MeasuredLink l;
  l.bytes = std::max<std::uint64_t>(bytes, 1 << 16);
  l.latency_s = time_hop(comm, 8, iters);
  const double t = time_hop(comm, l.bytes, iters);
  l.bandwidth_gbps = static_cast<double>(l.bytes) * 8 / std::max(t - l.latency_s, 1e-9) / 1e9;
  return l;
}

double hop_bytes(const PlanProblem& problem, std::int64_t tokens) {
  PlanProblem p = problem;
  if (p.kv_heads == 0) p.kv_heads = p.heads;
  return chunk_geometry(p).hop_bytes_per_token * static_cast<double>(tokens);
}

double measure_kernel_rate(const PlanProblem& problem, int tokens, int threads) {
  PlanProblem p = problem;
  if (p.kv_heads == 0) p.kv_heads = p.heads;
  const ChunkGeometry g = chunk_geometry(p);
  KernelBenchRequest req;
  req.n = std::clamp<std::int64_t>(tokens, 64, 8192);
  req.n_kv = req.n;
  req.d = p.d;
  req.heads = g.hq;
  req.kv_heads = g.hk;
  req.dtype = dtype_name(p.dtype);
  req.threads = threads;
  req.reps = 3;
  req.backward = p.backward;
  return run_kernel_bench(req).at("gflops").get<double>();
}

}  // namespace ringattn
