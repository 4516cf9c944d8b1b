// What this CPU can do (checked at run time, so one binary serves CPUs with and
// without AVX-512) and how many threads a rank may use.
#pragma once

#include <string>

namespace ringattn {

struct CpuFeatures {
  bool fma = false;
  bool avx2 = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512_bf16 = false;
  // AMX tiles with bf16 dot products (Sapphire Rapids and later), and the
  // kernel's permission to use the tile data (Linux's ARCH_REQ_XCOMP_PERM,
  // asked once here): both, or false.
  bool amx_bf16 = false;
};

const CpuFeatures& cpu_features();

// The widest vector ISA the kernels use here: "avx512", "avx2" or "generic".
std::string vector_isa();

// Cores this process may run on (its affinity mask) when that mask is
// already per rank (a binding launcher); else SLURM_CPUS_PER_TASK where
// Slurm sets it; else the mask's cores divided among the ranks on this node
// (local_ranks()). At least 1. Several ranks on one node therefore never
// oversubscribe it.
int default_threads();

// Ranks on this node as the launcher tells it (OMPI_COMM_WORLD_LOCAL_SIZE,
// MPI_LOCALNRANKS, SLURM_NTASKS_PER_NODE, SLURM_TASKS_PER_NODE); 1 without one.
int local_ranks();

// A warning when threads (> 1) per rank times local_ranks() exceed this
// node's online cores, else "".
std::string oversubscription_warning(int threads);

// Cores in this process's affinity mask.
int affinity_cores();
// This node's online cores, whatever this process is bound to.
int online_cores();

// The CPUs `threads` OpenMP threads of this process may run on, each as it
// is bound (OMP_PROC_BIND pins each to its place), together, as a list
// "0-3,8": where a rank's work can go. Two ranks pinned to the same core
// (a launcher that did not bind, with OMP_PROC_BIND set) show it here.
std::string thread_cpu_list(int threads);

// This process's rank as the launcher's environment tells it (Open MPI,
// MPICH/PMI, Slurm), before or without MPI; 0 when started alone.
int launcher_rank();
// The number of processes the launcher started (1 without one).
int launcher_size();

}  // namespace ringattn
