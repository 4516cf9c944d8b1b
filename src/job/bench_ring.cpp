// Timing the ring (see bench_ring.hpp).
#include "job/bench_ring.hpp"

#include <algorithm>
#include <numeric>
#include <vector>

#include "comm/mpi_transport.hpp"
#include "core/aligned_buffer.hpp"
#include "core/cpu.hpp"
#include "core/documents.hpp"
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/positions.hpp"
#include "core/seeded_data.hpp"
#include "core/shape.hpp"
#include "core/timer.hpp"
#include "core/version.hpp"
#include "kernel/attention.hpp"
#include "kernel/backward.hpp"
#include "ring/cpu_ring.hpp"
#include "ring/kv_block.hpp"
#include "ring/partition.hpp"

namespace ringattn {
namespace {

// Rank r's rows of a seeded (B, H, N, D) tensor into out, (B, H, pos.size(),
// D): element (b, h, t, d) is seeded_uniform(seed, ((b·H + h)·N + t)·D + d)
// wherever it lives.
void fill_seeded_shard(char* out, std::uint64_t seed, DType t, std::int64_t B, std::int64_t H,
                       std::int64_t N, std::int64_t D, const Positions& pos) {
  const std::int64_t n = pos.size();
  const std::size_t es = dtype_size(t);
  for (std::int64_t bh = 0; bh < B * H; ++bh)
    for (std::int64_t i = 0; i < n; ++i)
      fill_seeded(out + static_cast<std::size_t>((bh * n + i) * D) * es, t,
                  static_cast<std::size_t>(D), seed,
                  static_cast<std::uint64_t>((bh * N + pos[i]) * D));
}

struct Problem {
  AttnShape shape;
  DType dtype;
  Documents docs;  // packed sequences, or one dense sequence
  Visibility vis;
  PartitionKind kind;
  RingPartitions parts(int ranks) const {
    return ring_partitions(kind, shape.tokens_q, shape.tokens_kv, ranks, docs, vis);
  }
};

// Runs the ring on comm with this rank's seeded shards, K and V seeded
// straight into the ring's home block as the job reads them; returns its
// stats. The backward (o.backward) is timed alone: an untimed forward over
// the same layout first gives its o and lse, dO is seeded, and the home
// block is filled again (the forward left other ranks' blocks there).
RingStats timed_ring(MPI_Comm comm, const Problem& pb, const RingBenchRequest& o, int threads) {
  CpuRing ring(comm);
  int P = 1, r = 0;
  RA_MPI_CHECK(MPI_Comm_size(comm, &P));
  RA_MPI_CHECK(MPI_Comm_rank(comm, &r));
  const RingPartitions parts = pb.parts(P);
  const Partition &qp = parts.q, &kp = parts.kv;
  RingLayout layout{qp,
                    kp,
                    {pb.dtype, pb.shape.batch, pb.shape.heads_kv, pb.shape.head_dim},
                    pb.shape.heads_q,
                    pb.docs};
  layout.gradients = o.backward;
  const std::size_t q_elems = static_cast<std::size_t>(pb.shape.batch * pb.shape.heads_q *
                                                       qp.local_size(r) * pb.shape.head_dim);
  AlignedBuffer<char> q(q_elems * dtype_size(pb.dtype));
  fill_seeded_shard(q.data(), o.seed, pb.dtype, pb.shape.batch, pb.shape.heads_q, pb.shape.tokens_q,
                    pb.shape.head_dim, qp.positions(r));
  auto fill_home = [&] {
    const KvBlockRef kv = ring.home_block(layout);
    fill_seeded_shard(kv.k(), o.seed + 1, pb.dtype, pb.shape.batch, pb.shape.heads_kv,
                      pb.shape.tokens_kv, pb.shape.head_dim, kp.positions(r));
    fill_seeded_shard(kv.v(), o.seed + 2, pb.dtype, pb.shape.batch, pb.shape.heads_kv,
                      pb.shape.tokens_kv, pb.shape.head_dim, kp.positions(r));
  };
  fill_home();
  RingOptions opt;
  opt.causal = o.causal;
  opt.window = Window::parse(o.window, "bench ring --window");
  opt.compute = parse_compute_type(o.compute.c_str());
  opt.threads = threads;
  opt.poll = o.poll;
  if (!o.backward) {
    RA_MPI_CHECK(MPI_Barrier(comm));
    return ring.run(layout, q.data(), nullptr, opt);
  }
  AlignedBuffer<float> out(q_elems),
      lse(static_cast<std::size_t>(pb.shape.batch * pb.shape.heads_q * qp.local_size(r)));
  AlignedBuffer<float> d_o(q_elems);  // (B, H, local q rows, D)
  ring.run(layout, q.data(), lse.data(), opt);
  std::copy_n(ring.output(), q_elems, out.data());
  fill_seeded_shard(reinterpret_cast<char*>(d_o.data()), o.seed + 3, DType::f32, pb.shape.batch,
                    pb.shape.heads_q, pb.shape.tokens_q, pb.shape.head_dim, qp.positions(r));
  fill_home();
  RA_MPI_CHECK(MPI_Barrier(comm));
  return ring.run_backward(layout, q.data(), {d_o.data(), out.data(), lse.data()}, opt);
}

// What the run measured; the per-rank figures only on rank 0.
struct Figures {
  double t1 = 0, tp = 0;                        // seconds on one rank, on P ranks (the slowest)
  std::vector<double> flops, compute, wait;     // per rank
  double bytes = 0;                             // sent, all ranks
  std::vector<double> step_compute, step_wait;  // per step, max over ranks
  std::vector<double> step_bytes;               // per step, the most a rank sent
  // Over the steps' hops (the backward's last hop home is not one): the
  // most a rank sent, the longest a rank waited in all. Beyond the steps,
  // home_wait: the longest a rank waited for the last hop (0: forward).
  double step_bytes_max = 0, step_wait_max = 0, home_wait = 0;
  std::uint64_t hop_bytes = 0;  // the largest message (the largest block's)
  double hop_s = 0;             // one hop of it alone
};

// Runs the baseline, the ring and the hop alone. Collective.
Figures measure(MPI_Comm comm, int P, int rank, const Problem& pb, const RingBenchRequest& o,
                int threads) {
  Figures f;
  // T1: the same problem on one rank (rank 0 alone, same threads), first.
  if (o.baseline) {
    if (rank == 0) f.t1 = timed_ring(MPI_COMM_SELF, pb, o, threads).total_s;
    RA_MPI_CHECK(MPI_Bcast(&f.t1, 1, MPI_DOUBLE, 0, comm));
  }

  // TP: the slowest rank's ring, timed like T1 (after the shards are made).
  const RingStats st = timed_ring(comm, pb, o, threads);
  f.tp = st.total_s;
  RA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &f.tp, 1, MPI_DOUBLE, MPI_MAX, comm));

  // Per-rank figures to rank 0: flops, compute, exposed wait, bytes, and
  // the wait and bytes of the steps' hops alone.
  double step_wait = 0, step_bytes = 0;
  for (const RingStepStats& s : st.steps) {
    step_wait += s.wait_s;
    step_bytes += static_cast<double>(s.bytes_sent);
  }
  constexpr int kFields = 6;
  const double mine[kFields] = {
      st.flops, st.compute_s, st.wait_s, static_cast<double>(st.bytes_sent), step_wait, step_bytes};
  std::vector<double> all(kFields * static_cast<std::size_t>(P));
  RA_MPI_CHECK(MPI_Gather(mine, kFields, MPI_DOUBLE, all.data(), kFields, MPI_DOUBLE, 0, comm));
  f.flops.resize(P);
  f.compute.resize(P);
  f.wait.resize(P);
  for (int r = 0; r < P; ++r) {
    const double* a = all.data() + kFields * r;
    f.flops[r] = a[0];
    f.compute[r] = a[1];
    f.wait[r] = a[2];
    f.bytes += a[3];
    f.step_wait_max = std::max(f.step_wait_max, a[4]);
    f.step_bytes_max = std::max(f.step_bytes_max, a[5]);
    f.home_wait = std::max(f.home_wait, a[2] - a[4]);
  }
  // Per-step maxima over ranks.
  f.step_compute.resize(P);
  f.step_wait.resize(P);
  f.step_bytes.resize(P);
  for (int s = 0; s < P; ++s) {
    f.step_compute[s] = st.steps[s].compute_s;
    f.step_wait[s] = st.steps[s].wait_s;
    f.step_bytes[s] = static_cast<double>(st.steps[s].bytes_sent);
  }
  RA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, f.step_compute.data(), P, MPI_DOUBLE, MPI_MAX, comm));
  RA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, f.step_wait.data(), P, MPI_DOUBLE, MPI_MAX, comm));
  RA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, f.step_bytes.data(), P, MPI_DOUBLE, MPI_MAX, comm));

  // The hop alone, at the largest message's size: the largest block, and
  // in the backward the gradients of another behind it.
  const KvBlock largest = KvBlock::largest(
      {pb.dtype, pb.shape.batch, pb.shape.heads_kv, pb.shape.head_dim}, pb.parts(P).kv);
  f.hop_bytes = largest.bytes() + (o.backward ? largest.grad_bytes() : 0);
  f.hop_s = P > 1 ? time_hop(comm, f.hop_bytes, o.p2p_iters) : 0.0;
  return f;
}

// The figures as the JSON report (rank 0).
nlohmann::json report(const Figures& f, int P, const Problem& pb, const RingBenchRequest& o,
                      int threads) {
  const double total_flops = std::accumulate(f.flops.begin(), f.flops.end(), 0.0);
  const double mean_flops = total_flops / P;
  // Seconds the hop alone takes for `bytes` (0 on one rank): the transfers'
  // time if nothing hid them. The forward sends one block a step but the
  // last; the backward sends at every step (blocks, gradients behind them).
  // Overlap is over those hops; the backward's last one, the gradients
  // home, has nothing to hide under, and what a rank waits there (chiefly
  // for the slowest rank to finish) is home_hop_wait_s.
  const auto hop_time = [&](double bytes) {
    return f.hop_bytes > 0 ? f.hop_s * bytes / static_cast<double>(f.hop_bytes) : 0.0;
  };
  const double transfer_s = hop_time(f.step_bytes_max);  // per rank
  const double exposed = f.step_wait_max;
  const double bw = f.hop_s > 0 ? static_cast<double>(f.hop_bytes) / f.hop_s / 1e9 : 0.0;
  // The flops of every (query, key) pair, by the pass's own count.
  const AttnParams all_pairs = AttnParams::dense(
      nullptr, nullptr, nullptr, pb.dtype, pb.shape.batch, pb.shape.heads_q, pb.shape.heads_kv,
      pb.shape.tokens_q, pb.shape.tokens_kv, pb.shape.head_dim);
  const double all_flops =
      o.backward ? attention_backward_flops(all_pairs) : attention_flops(all_pairs);
  nlohmann::json j = {
      {"benchmark", "ring"},
      {"pass", o.backward ? "backward" : "forward"},
      {"version", kVersion},
      {"ranks", P},
      {"threads_per_rank", threads},
      {"batch", pb.shape.batch},
      {"n", pb.shape.tokens_q},
      {"n_kv", pb.shape.tokens_kv},
      {"d", pb.shape.head_dim},
      {"heads", pb.shape.heads_q},
      {"kv_heads", pb.shape.heads_kv},
      {"dtype", dtype_name(pb.dtype)},
      {"causal", o.causal},
      {"window", o.window},
      {"partition", partition_name(pb.kind)},
      {"documents", pb.docs.count()},
      // The visible pairs' share of all (query, key) pairs: what masking saves.
      {"visible_fraction", total_flops / all_flops},
      {"poll", o.poll},
      {"seconds", f.tp},
      {"gflops", total_flops / f.tp / 1e9},
      {"compute_s", f.compute},
      {"exposed_wait_s", f.wait},
      {"flops", f.flops},
      {"load_balance",
       mean_flops > 0 ? *std::max_element(f.flops.begin(), f.flops.end()) / mean_flops : 1.0},
      {"steps", nlohmann::json::array()},
      {"p2p",
       {{"bytes", f.hop_bytes}, {"seconds", f.hop_s}, {"algbw_GBps", bw}, {"busbw_GBps", bw}}},
      {"bytes_sent_total", f.bytes},
      {"overlap", transfer_s > 0 ? std::clamp(1.0 - exposed / transfer_s, 0.0, 1.0) : 1.0},
  };
  for (int s = 0; s < P; ++s)
    j["steps"].push_back({{"step", s},
                          {"compute_s_max", f.step_compute[s]},
                          {"wait_s_max", f.step_wait[s]},
                          {"transfer_s", hop_time(f.step_bytes[s])}});
  if (o.backward) j["home_hop_wait_s"] = f.home_wait;
  if (o.baseline) {
    j["seconds_one_rank"] = f.t1;
    j["efficiency"] = f.t1 / (P * f.tp);
  }
  return j;
}

Problem problem_of(const RingBenchRequest& o) {
  Problem pb{{o.batch, o.heads, o.kv_heads > 0 ? o.kv_heads : o.heads, o.n,
              o.n_kv > 0 ? o.n_kv : o.n, o.d},
             parse_dtype(o.dtype),
             {},
             Visibility::of(o.causal, Window::parse(o.window, "bench ring --window")),
             PartitionKind::contiguous};
  if (!o.docs.empty()) {
    RA_CHECK(o.batch == 1, usage, "bench ring --docs: packed sequences need --batch 1");
    pb.docs = Documents::packed(packed_offsets(o.docs, pb.shape.tokens_q, "bench ring --docs"),
                                packed_offsets(o.docs, pb.shape.tokens_kv, "bench ring --docs"));
  }
  pb.kind = o.partition.empty() ? default_partition(o.causal, pb.docs.is_packed())
                                : parse_partition(o.partition);
  return pb;
}

}  // namespace

RingBench::RingBench(MPI_Comm comm, const RingBenchRequest& req) : comm_(comm), req_(req) {
  int P = 1;
  RA_MPI_CHECK(MPI_Comm_size(comm, &P));
  const Problem pb = problem_of(req);
  // Checks every rank makes alike, before any communication.
  RA_CHECK(!req.backward || req.compute == "f32", usage,
           "bench ring --backward: the backward computes in f32 only, not --compute ", req.compute);
  AttnParams check =
      AttnParams::dense(nullptr, nullptr, nullptr, pb.dtype, pb.shape.batch, pb.shape.heads_q,
                        pb.shape.heads_kv, 0, 0, pb.shape.head_dim);
  check.window = Window::parse(req.window, "bench ring --window");
  check.validate();
  (void)pb.parts(P);  // they refuse N < P
}

std::optional<nlohmann::json> RingBench::run() const {
  int P = 1, rank = 0;
  RA_MPI_CHECK(MPI_Comm_size(comm_, &P));
  RA_MPI_CHECK(MPI_Comm_rank(comm_, &rank));
  const Problem pb = problem_of(req_);
  const int threads = req_.threads > 0 ? req_.threads : default_threads();
  const Figures f = measure(comm_, P, rank, pb, req_, threads);
  if (rank != 0) return std::nullopt;
  return report(f, P, pb, req_, threads);
}

double time_hop(MPI_Comm comm, std::uint64_t bytes, int iters) {
  MpiTransport transport(comm);
  AlignedBuffer<char> a(bytes), b(bytes);
  a.fill(1);
  std::vector<double> t;
  for (int i = 0; i < iters + 1; ++i) {
    RA_MPI_CHECK(MPI_Barrier(comm));
    Timer timer;
    transport.start(a.data(), bytes, b.data(), bytes);
    transport.wait();
    double s = timer.seconds();
    RA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &s, 1, MPI_DOUBLE, MPI_MAX, comm));
    if (i > 0) t.push_back(s);  // the first hop sets up connections
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace ringattn
