// The checks before a run allocates or creates anything (see preflight.hpp).
#include "job/preflight.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>

#include "comm/agree.hpp"
#include "core/checked.hpp"
#include "core/cpu.hpp"
#include "core/error.hpp"
#include "core/host_memory.hpp"
#include "core/message_text.hpp"
#include "io/shard_io.hpp"
#include "kernel/attention.hpp"
#include "kernel/backward.hpp"
#include "kernel/params.hpp"
#include "ring/kv_block.hpp"
#include "ring/partition.hpp"

namespace ringattn {
namespace {

std::string shape(const H5DatasetDesc& d) {
  std::ostringstream os;
  os << "'" << d.name << "' [" << d.dims[0] << ", " << d.dims[1] << ", " << d.dims[2] << ", "
     << d.dims[3] << "]";
  return os.str();
}

// Throws Error(usage) when Slurm's task count and the world size differ.
void slurm_check_local(int world) {
  const char* job = std::getenv("SLURM_JOB_ID");
  const char* ntasks = std::getenv("SLURM_NTASKS");
  if (!job || !ntasks || !*job || !*ntasks) return;
  errno = 0;
  char* end = nullptr;
  const long long n = std::strtoll(ntasks, &end, 10);
  if (errno != 0 || end == ntasks || *end != '\0' || n < 1) return;  // not a count: not ours
  RA_CHECK(n == world, usage, "world size ", world, " differs from SLURM_NTASKS=", n,
           " (Slurm job ", job,
           "): the ranks are not the tasks Slurm allocated; launch with "
           "srun, or mpirun -np ",
           n, " (or unset SLURM_NTASKS to run anyway)");
}

// Throws Error(input) naming the shape when estimate m overflowed int64.
void check_no_overflow(const JobConfig& cfg, const InputInfo& info, int ranks,
                       const RankMemory& m) {
  RA_CHECK(!m.overflow, input, "input file '", cfg.input, "': datasets ", shape(info.q), ", ",
           shape(info.k), ": the memory one rank needs for a chunk of ",
           std::min<std::int64_t>(std::max<std::int64_t>(cfg.kv_heads_per_chunk, 1),
                                  info.shape.heads_kv),
           " K/V head(s) on ", ranks, ranks == 1 ? " rank" : " ranks",
           " overflows a 64-bit byte count (over 8 EiB); these sizes cannot be run");
}

}  // namespace

RingPartitions job_partitions(const JobConfig& cfg, const InputInfo& info, const Documents& docs,
                              int ranks) {
  return ring_partitions(cfg.effective_partition(docs.is_packed()), info.shape.tokens_q,
                         info.shape.tokens_kv, ranks, docs, Visibility::of(cfg.causal, cfg.window));
}

RankMemory estimate_rank_memory(const JobConfig& cfg, const InputInfo& info,
                                const RingPartitions& parts) {
  RankMemory m;
  Checked c;
  const Partition &q_part = parts.q, &kv_part = parts.kv;
  const std::int64_t nq = q_part.max_local_size(), nkv = kv_part.max_local_size();
  const std::int64_t D = info.shape.head_dim,
                     es = static_cast<std::int64_t>(dtype_size(info.dtype));
  const std::int64_t hk = std::clamp<std::int64_t>(cfg.kv_heads_per_chunk, 1, info.shape.heads_kv);
  const std::int64_t hq = c.mul({hk, info.shape.heads_q / info.shape.heads_kv});
  const std::int64_t q_rows = c.mul({hq, nq});  // (hq, nq)
  const KvShape kv{info.dtype, 1, hk, D};
  const bool device = cfg.backend == Backend::cuda;
  // The owners say what they allocate. The CPU ring: two blocks, the first
  // K and V's home; the kernel: its packed tiles and per-thread scratch,
  // and the state (m2, l, acc) whose acc becomes o. The device ring holds
  // on the host its pinned home block (and two staging blocks when MPI
  // moves them) and o (hq, nq, D) f32; its kernel works on the device.
  m.q = c.mul({q_rows, D, es});
  const bool staged = cfg.effective_transport() == TransportKind::mpi;
  m.ring = ring_buffer_bytes(kv, kv_part, device ? (staged ? 3 : 1) : 2);
  if (!device && !c.overflow) {
    AttnParams kp = AttnParams::dense(nullptr, nullptr, nullptr, info.dtype, 1, hq, hk, nq, nkv, D);
    kp.compute = cfg.compute;
    kp.threads = cfg.threads > 0 ? cfg.threads : default_threads();
    m.packed = static_cast<std::int64_t>(update_state_workspace_bytes(kp));
  }
  m.state = device ? c.mul({q_rows, D, 4}) : c.add({c.mul({2, q_rows, 4}), c.mul({q_rows, D, 4})});
  m.lse = c.mul({q_rows, 4});
  m.out16 = cfg.o_dtype == OutDType::input && info.dtype == DType::f16 ? c.mul({q_rows, D, 2}) : 0;
  // Strided shards move through the exchange's scratch; f32 rows (o, the
  // gradients) are the widest it carries.
  if (q_part.kind() == PartitionKind::striped || kv_part.kind() == PartitionKind::striped)
    m.io = shard_redistribution_bytes(std::max(q_part.tokens(), kv_part.tokens()), q_part.ranks(),
                                      c.mul({D, std::max<std::int64_t>(es, 4)}));
  if (cfg.backward && !c.overflow) {
    AttnParams kp = AttnParams::dense(nullptr, nullptr, nullptr, info.dtype, 1, hq, hk, nq, nkv, D);
    kp.threads = cfg.threads > 0 ? cfg.threads : default_threads();
    const std::int64_t ring_grads = ring_gradient_bytes(kv, kv_part);
    const auto state = static_cast<std::int64_t>(GradState::bytes(kp));
    const auto tiles = static_cast<std::int64_t>(GradState::fold_bytes(kp));
    c.overflow = c.overflow || ring_grads == kBytesOverflow || state == kBytesOverflow;
    m.gradients =
        c.add({c.mul({3, q_rows, D, 4}), c.mul({2, hk, nkv, D, es}), ring_grads, state, tiles});
  }
  c.overflow = c.overflow || m.ring == kBytesOverflow || m.packed == kBytesOverflow;
  m.total = c.add({m.q, m.ring, m.packed, m.state, m.lse, m.out16, m.io, m.gradients});
  m.overflow = c.overflow;
  return m;
}

std::int64_t estimate_rank_bytes(const JobConfig& cfg, const InputInfo& info,
                                 const RingPartitions& parts) {
  const RankMemory m = estimate_rank_memory(cfg, info, parts);
  check_no_overflow(cfg, info, parts.q.ranks(), m);
  return m.total;
}

std::int64_t rank_memory_budget(MPI_Comm comm, double memory_limit_mb) {
  // Collective in every case, so callers need not know which case applies.
  MPI_Comm node = MPI_COMM_NULL;
  RA_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  int node_ranks = 1;
  const int rc = MPI_Comm_size(node, &node_ranks);
  MPI_Comm_free(&node);
  RA_MPI_CHECK(rc);

  if (memory_limit_mb > 0) {
    const double bytes = memory_limit_mb * 1024.0 * 1024.0;
    return bytes >= 9.2e18 ? INT64_MAX : static_cast<std::int64_t>(bytes);
  }
  const std::int64_t avail = available_memory_bytes();
  if (avail < 0) return INT64_MAX;  // nothing to go by: no check
  return avail / std::max(node_ranks, 1);
}

void check_slurm_world(MPI_Comm comm) {
  int world = 1;
  RA_MPI_CHECK(MPI_Comm_size(comm, &world));
  agree(comm, [&] { slurm_check_local(world); });
}

RingPartitions preflight(MPI_Comm comm, const JobConfig& cfg, const InputInfo& info,
                         const Documents& docs) {
  int P = 1;
  RA_MPI_CHECK(MPI_Comm_size(comm, &P));
  const std::int64_t budget = rank_memory_budget(comm, cfg.memory_limit_mb);
  const std::string file = "input file '" + cfg.input + "'";

  std::optional<RingPartitions> parts;
  agree(comm, [&] {
    slurm_check_local(P);

    const std::int64_t most = std::min(info.shape.tokens_q, info.shape.tokens_kv);
    RA_CHECK(info.shape.tokens_q >= P, input, file, ", dataset '", info.q.name, "': has ",
             counted(info.shape.tokens_q, "token"), ", fewer than the ", P,
             " ranks (every rank needs a token: run on at most ", counted(most, "rank"), ")");
    RA_CHECK(info.shape.tokens_kv >= P, input, file, ", dataset '", info.k.name, "': has ",
             counted(info.shape.tokens_kv, "token"), ", fewer than the ", P,
             " ranks (every rank needs a token: run on at most ", counted(most, "rank"), ")");
    RA_CHECK(info.shape.head_dim >= 1 && info.shape.head_dim <= kMaxHeadDim, input, file,
             ", dataset '", info.q.name, "': head dim D = ", info.shape.head_dim,
             " is outside the kernel's range 1..", kMaxHeadDim);

    parts.emplace(job_partitions(cfg, info, docs, P));
    const RankMemory m = estimate_rank_memory(cfg, info, *parts);
    check_no_overflow(cfg, info, P, m);
    if (m.total <= budget) return;
    const std::int64_t hk = std::min<std::int64_t>(cfg.kv_heads_per_chunk, info.shape.heads_kv);
    // Everything but the kernel's padding scales as 1/P: the ranks that
    // would fit, roughly.
    const double need = std::ceil(static_cast<double>(P) * static_cast<double>(m.total) /
                                  static_cast<double>(budget));
    std::ostringstream hint;
    if (hk > 1) hint << "set kv_heads_per_chunk to 1 (now " << hk << ") or ";
    hint << "run on more ranks";
    if (need <= static_cast<double>(std::min(info.shape.tokens_q, info.shape.tokens_kv)))
      hint << " (about " << static_cast<long long>(need) << ")";
    std::ostringstream limit;
    if (cfg.memory_limit_mb > 0)
      limit << "memory_limit_mb = " << cfg.memory_limit_mb;
    else
      limit << "this rank's share of its node's available memory";
    RA_FAIL(input, file, ": datasets ", shape(info.q), ", ", shape(info.k), " need about ",
            binary_bytes(static_cast<double>(m.total)), " per rank on ", counted(P, "rank"), " (q ",
            binary_bytes(static_cast<double>(m.q)), ", K/V ring ",
            binary_bytes(static_cast<double>(m.ring)), ", kernel ",
            binary_bytes(static_cast<double>(m.packed)), ", state ",
            binary_bytes(static_cast<double>(m.state + m.lse + m.out16)),
            m.io > 0 ? ", striped rows' exchange " + binary_bytes(static_cast<double>(m.io)) : "",
            m.gradients > 0 ? ", gradients " + binary_bytes(static_cast<double>(m.gradients)) : "",
            "), over the budget of ", binary_bytes(static_cast<double>(budget)), " (", limit.str(),
            "); ", hint.str());
  });
  return std::move(*parts);  // agreed: every rank built them
}

}  // namespace ringattn
