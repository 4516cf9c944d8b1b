// The checks before a run allocates or creates anything (see preflight.hpp).
#include "job/preflight.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "comm/agree.hpp"
#include "core/error.hpp"
#include "kernel/params.hpp"
#include "ring/partition.hpp"

namespace ringattn {
namespace {

// The kernel's largest key tile (AVX-512: 256 keys; AVX2: 64). The packed
// K^T is padded to whole tiles; the estimate takes the larger padding.
constexpr std::int64_t kMaxBlockK = 256;

// Overflow-checked int64 arithmetic: a sticky flag instead of a wrong number.
struct Checked {
  bool overflow = false;
  std::int64_t mul(std::initializer_list<std::int64_t> xs) {
    std::int64_t r = 1;
    for (std::int64_t x : xs)
      if (__builtin_mul_overflow(r, x, &r)) overflow = true;
    return overflow ? 0 : r;
  }
  std::int64_t add(std::initializer_list<std::int64_t> xs) {
    std::int64_t r = 0;
    for (std::int64_t x : xs)
      if (__builtin_add_overflow(r, x, &r)) overflow = true;
    return overflow ? 0 : r;
  }
};

// "512 B", "3.2 MiB", "4.0 PiB": binary units, one decimal.
std::string gib(std::int64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 6) {
    v /= 1024.0;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, kUnits[u]);
  return buf;
}

std::string shape(const H5DatasetDesc& d) {
  std::ostringstream os;
  os << "'" << d.name << "' [" << d.dims[0] << ", " << d.dims[1] << ", " << d.dims[2] << ", "
     << d.dims[3] << "]";
  return os.str();
}

// Value of "Key:   123 kB" in /proc/meminfo, in bytes; -1 when absent.
std::int64_t meminfo_bytes(const char* key) {
  std::ifstream f("/proc/meminfo");
  std::string line;
  const std::string want = std::string(key) + ":";
  while (std::getline(f, line)) {
    if (line.compare(0, want.size(), want) != 0) continue;
    std::istringstream is(line.substr(want.size()));
    long long kb = -1;
    is >> kb;
    return kb >= 0 && kb < LLONG_MAX / 1024 ? static_cast<std::int64_t>(kb) * 1024 : -1;
  }
  return -1;
}

// First number in a file (cgroup files); -1 when missing or "max".
std::int64_t file_number(const char* path) {
  std::ifstream f(path);
  long long v = -1;
  if (!(f >> v)) return -1;
  return v;
}

// What the cgroup lets this process still allocate; -1 when no limit is set.
std::int64_t cgroup_headroom() {
  // cgroup v2, then v1 (where "no limit" is a huge number).
  std::int64_t limit = file_number("/sys/fs/cgroup/memory.max");
  std::int64_t used = file_number("/sys/fs/cgroup/memory.current");
  if (limit < 0) {
    limit = file_number("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    used = file_number("/sys/fs/cgroup/memory/memory.usage_in_bytes");
    if (limit >= (std::int64_t{1} << 60)) limit = -1;
  }
  if (limit < 0) return -1;
  return std::max<std::int64_t>(0, limit - std::max<std::int64_t>(used, 0));
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

}  // namespace

RankMemory estimate_rank_memory(const JobConfig& cfg, const InputInfo& info, int ranks) {
  RankMemory m;
  Checked c;
  const PartitionKind kind = cfg.effective_partition();
  const std::int64_t nq = Partition(kind, info.Nq, ranks).max_local_size();
  const std::int64_t nkv = Partition(kind, info.Nkv, ranks).max_local_size();
  const std::int64_t D = info.D, es = static_cast<std::int64_t>(dtype_size(info.dtype));
  const std::int64_t hk = std::clamp<std::int64_t>(cfg.kv_heads_per_chunk, 1, info.Hkv);
  const std::int64_t hq = c.mul({hk, info.Hq / info.Hkv});
  const std::int64_t kv_block = c.mul({hk, nkv, D, es});  // one of K, V: (hk, nkv, D)
  const std::int64_t q_rows = c.mul({hq, nq});            // (hq, nq)

  m.q = c.mul({q_rows, D, es});
  m.kv = c.mul({2, kv_block});
  m.ring = c.mul({2, 2, kv_block});  // cur and next, K then V in each
  // Packed K^T (hk, KT*BK, D) f32; V tiles likewise unless V is f32 read in
  // place (then one padded tail tile); the kernel's int64 key positions.
  const std::int64_t kv_padded = c.mul({(nkv + kMaxBlockK - 1) / kMaxBlockK, kMaxBlockK});
  const bool v_direct = info.dtype == DType::f32 && cfg.compute == ComputeType::f32;
  const std::int64_t kt = c.mul({hk, kv_padded, D, 4});
  const std::int64_t vt = v_direct ? c.mul({hk, kMaxBlockK, D, 4}) : kt;
  m.packed = c.add({kt, vt, c.mul({c.add({kv_padded, nq}), 8})});
  m.state = c.add({c.mul({2, q_rows, 4}), c.mul({q_rows, D, 4})});
  m.lse = c.mul({q_rows, 4});
  m.out16 = cfg.o_dtype == "input" && info.dtype == DType::f16 ? c.mul({q_rows, D, 2}) : 0;
  m.total = c.add({m.q, m.kv, m.ring, m.packed, m.state, m.lse, m.out16});
  m.overflow = c.overflow;
  return m;
}

std::int64_t estimate_rank_bytes(const JobConfig& cfg, const InputInfo& info, int ranks) {
  const RankMemory m = estimate_rank_memory(cfg, info, ranks);
  RA_CHECK(!m.overflow, input, "input file '", cfg.input, "': datasets ", shape(info.q), ", ",
           shape(info.k), ": the memory one rank needs for a chunk of ",
           std::min<std::int64_t>(std::max<std::int64_t>(cfg.kv_heads_per_chunk, 1), info.Hkv),
           " K/V head(s) on ", ranks, ranks == 1 ? " rank" : " ranks",
           " overflows a 64-bit byte count (over 8 EiB); these sizes cannot be run");
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
  std::int64_t avail = meminfo_bytes("MemAvailable");
  const std::int64_t cg = cgroup_headroom();
  if (cg >= 0) avail = avail < 0 ? cg : std::min(avail, cg);
  if (avail < 0) return INT64_MAX;  // nothing to go by: no check
  return avail / std::max(node_ranks, 1);
}

void check_slurm_world(MPI_Comm comm) {
  int world = 1;
  RA_MPI_CHECK(MPI_Comm_size(comm, &world));
  agree(comm, [&] { slurm_check_local(world); });
}

void preflight(MPI_Comm comm, const JobConfig& cfg, const InputInfo& info) {
  int P = 1;
  RA_MPI_CHECK(MPI_Comm_size(comm, &P));
  const std::int64_t budget = rank_memory_budget(comm, cfg.memory_limit_mb);
  const std::string file = "input file '" + cfg.input + "'";

  agree(comm, [&] {
    slurm_check_local(P);

    RA_CHECK(info.Nq >= P, input, file, ", dataset '", info.q.name, "': has ", info.Nq,
             " tokens, fewer than the ", P, " ranks (every rank needs a token: run on at most ",
             std::min(info.Nq, info.Nkv), " ranks)");
    RA_CHECK(info.Nkv >= P, input, file, ", dataset '", info.k.name, "': has ", info.Nkv,
             " tokens, fewer than the ", P, " ranks (every rank needs a token: run on at most ",
             std::min(info.Nq, info.Nkv), " ranks)");
    RA_CHECK(info.D >= 1 && info.D <= kMaxHeadDim, input, file, ", dataset '", info.q.name,
             "': head dim D = ", info.D, " is outside the kernel's range 1..", kMaxHeadDim);

    const RankMemory m = estimate_rank_memory(cfg, info, P);
    (void)estimate_rank_bytes(cfg, info, P);  // the overflow message
    if (m.total <= budget) return;
    const std::int64_t hk = std::min<std::int64_t>(cfg.kv_heads_per_chunk, info.Hkv);
    // Everything but the kernel's padding scales as 1/P: the ranks that
    // would fit, roughly.
    const double need = std::ceil(static_cast<double>(P) * static_cast<double>(m.total) /
                                  static_cast<double>(budget));
    std::ostringstream hint;
    if (hk > 1) hint << "set kv_heads_per_chunk to 1 (now " << hk << ") or ";
    hint << "run on more ranks";
    if (need <= static_cast<double>(std::min(info.Nq, info.Nkv)))
      hint << " (about " << static_cast<long long>(need) << ")";
    std::ostringstream limit;
    if (cfg.memory_limit_mb > 0)
      limit << "memory_limit_mb = " << cfg.memory_limit_mb;
    else
      limit << "this rank's share of its node's available memory";
    RA_CHECK(false, input, file, ": datasets ", shape(info.q), ", ", shape(info.k), " need about ",
             gib(m.total), " per rank on ", P, P == 1 ? " rank" : " ranks", " (q ", gib(m.q),
             ", k/v ", gib(m.kv), ", ring ", gib(m.ring), ", kernel ", gib(m.packed), ", state ",
             gib(m.state + m.lse + m.out16), "), over the budget of ", gib(budget), " (",
             limit.str(), "); ", hint.str());
  });
}

}  // namespace ringattn
