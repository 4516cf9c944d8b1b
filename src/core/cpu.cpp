// Run-time CPU feature detection and the default thread count per rank.
#include "core/cpu.hpp"

#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>

namespace ringattn {

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    CpuFeatures c;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    c.fma = __builtin_cpu_supports("fma");
    c.avx2 = __builtin_cpu_supports("avx2");
    c.avx512f = __builtin_cpu_supports("avx512f");
    c.avx512bw = __builtin_cpu_supports("avx512bw");
    c.avx512vl = __builtin_cpu_supports("avx512vl");
    c.avx512dq = __builtin_cpu_supports("avx512dq");
    c.avx512_bf16 = __builtin_cpu_supports("avx512bf16");
    // gcc 12 has no "f16c" name for __builtin_cpu_supports; AVX2 parts all have it.
    c.f16c = c.avx2;
#endif
#if defined(__x86_64__) && defined(SYS_arch_prctl)
    // CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE. Linux hands out the
    // 8 KiB tile state only on request (XFEATURE_XTILEDATA = 18).
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
    if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (edx >> 22 & 1) && (edx >> 24 & 1))
      c.amx_bf16 = syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
#endif
    return c;
  }();
  return f;
}

std::string vector_isa() {
  const auto& c = cpu_features();
  if (c.avx512f && c.avx512bw && c.avx512vl && c.avx512dq) return "avx512";
  if (c.avx2 && c.fma) return "avx2";
  return "generic";
}

int affinity_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

int online_cores() {
  return static_cast<int>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
}

std::string thread_cpu_list(int threads) {
  cpu_set_t all;
  CPU_ZERO(&all);
#pragma omp parallel num_threads(std::max(1, threads))
  {
    cpu_set_t mine;  // this thread's own mask (0: the calling thread)
    CPU_ZERO(&mine);
    if (sched_getaffinity(0, sizeof mine, &mine) == 0) {
#pragma omp critical(ringattn_thread_cpus)
      CPU_OR(&all, &all, &mine);
    }
  }
  std::string list;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (!CPU_ISSET(c, &all)) continue;
    int last = c;
    while (last + 1 < CPU_SETSIZE && CPU_ISSET(last + 1, &all)) ++last;
    // Appended piece by piece: gcc 12 warns (-Wrestrict, a false positive)
    // on "-" + std::to_string(...).
    if (!list.empty()) list += ',';
    list += std::to_string(c);
    if (last > c) {
      list += '-';
      list += std::to_string(last);
    }
    c = last;
  }
  return list;
}

int local_ranks() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE",
                          "SLURM_TASKS_PER_NODE"}) {
    // SLURM_TASKS_PER_NODE reads "2(x3),1": this node's count leads when the
    // nodes alike; atoi takes the leading number.
    if (const char* s = std::getenv(var); s && std::atoi(s) > 0) return std::atoi(s);
  }
  return 1;
}

int default_threads() {
  const int cores = affinity_cores();
  const int online = online_cores();
  // A launcher that binds each rank to its own cores already gave us our share.
  if (cores < online) return cores;
  // Slurm says how many CPUs a task has even where it does not bind tasks.
  if (const char* s = std::getenv("SLURM_CPUS_PER_TASK"); s && std::atoi(s) > 0)
    return std::min(cores, std::atoi(s));
  return std::max(1, cores / local_ranks());
}

std::string oversubscription_warning(int threads) {
  const int online = online_cores();
  const int local = local_ranks();
  // One thread per rank cannot be lowered: more ranks than cores was the
  // launch's own choice (--oversubscribe), not a --threads mistake.
  if (threads <= 1 || static_cast<long>(threads) * local <= online) return "";
  return std::to_string(threads) + " threads per rank x " + std::to_string(local) +
         " ranks on this node exceed its " + std::to_string(online) +
         " cores: the ranks will compete for them (lower --threads)";
}

int launcher_rank() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"})
    if (const char* v = std::getenv(var)) return std::atoi(v);
  return 0;
}

int launcher_size() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"})
    if (const char* v = std::getenv(var)) return std::max(1, std::atoi(v));
  return 1;
}

}  // namespace ringattn
