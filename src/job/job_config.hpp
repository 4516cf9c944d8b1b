// Everything one `ringattn run` needs to know, and the one table of its
// settings. JobConfig holds the values, with the defaults a user gets when
// they give only an input and an output; for_each_setting() below names,
// for each member, its TOML section and key, its flag, help and check, and
// whether it changes the result's bits. What lists settings visits that
// table instead of spelling them out:
//   - the TOML reader and --print-config (job/config_toml.hpp),
//   - the flags of `ringattn run` (cli/run.cpp),
//   - the JSON stored with the output and the resume key (config_json,
//     resume_key_json in job/job.hpp),
//   - the checks of a filled struct (check_job_config), and the comparison
//     of the ranks' settings before a run starts (agree_settings).
// Adding a setting is one member, one row, and its use.
//
// Enums (backend, transport, output type, partition, compute type) are
// parsed at the edge, by the table; the job compares no strings.
//
// Includes: mpi.h (MPI_Comm), job/setting.hpp (Setting, NumberRule),
// job/progress.hpp (ProgressStyle),
// kernel/params.hpp (ComputeType), ring/partition.hpp (PartitionKind).
#pragma once

#include <mpi.h>

#include <cfloat>
#include <cstdint>
#include <optional>
#include <string>

#include "job/progress.hpp"
#include "job/setting.hpp"
#include "kernel/params.hpp"
#include "ring/partition.hpp"

namespace ringattn {

enum class Backend { cpu, cuda };        // where the attention kernel runs (cuda: one GPU per rank)
enum class TransportKind { mpi, nccl };  // how K/V blocks travel
enum class OutDType { f32, input };      // the type of o: f32, or the input's storage type

struct JobConfig {
  // [input]
  std::string input;  // HDF5 file with q, k, v [B, H, N, D]
  std::string q_name = "q", k_name = "k", v_name = "v";
  std::string do_name = "do";    // the upstream gradient dO [B, H, N, D] (--backward)
  bool allow_nonfinite = false;  // accept NaN/Inf in q, k, v (default: refuse, naming the first)
  // [output]
  std::string output;  // HDF5 file to write (o, and lse when asked)
  bool lse = false;    // also write lse [B, H, N] f32
  OutDType o_dtype = OutDType::f32;
  bool overwrite = false;  // replace an existing output
  // [attention]
  bool causal = false;
  Window window;    // keys i - L .. i + R of query i (default: all; causal caps R at 0)
  float scale = 0;  // 0: 1/sqrt(D)
  ComputeType compute = ComputeType::f32;
  // [ring]
  std::optional<PartitionKind> partition;  // unset (auto): see job_partitions (preflight.hpp)
  std::optional<TransportKind> transport;  // unset (auto): nccl with cuda, else mpi
  double comm_timeout = 1800;              // seconds a rank may block on a peer; 0 = forever
  // [run]
  int threads = 0;                        // per rank; 0: the rank's share of its node's cores
  std::int64_t kv_heads_per_chunk = 1;    // K/V heads per streamed chunk (with their query heads)
  std::string metrics;                    // write per-rank metrics JSON here ("" = none)
  std::optional<ProgressStyle> progress;  // unset (auto): bar on a terminal, else lines
  double progress_interval = 5.0;         // seconds between progress lines in a batch log
  Backend backend = Backend::cpu;
  double memory_limit_mb = 0;       // per rank; 0: the rank's share of the node's memory
  bool resume = false;              // continue an interrupted run from its partial output
  double checkpoint_interval = 10;  // s between progress records (0: after every chunk)
  // [gradients]
  bool backward = false;       // also compute dq, dk, dv from the input's dO
  bool reuse_forward = false;  // take o and lse from the input instead of computing them

  TransportKind effective_transport() const {
    return transport                  ? *transport
           : backend == Backend::cuda ? TransportKind::nccl
                                      : TransportKind::mpi;
  }
  // The partition a run of this config uses on an input that holds packed
  // documents (packed_input) or not: the one place auto is decided
  // (balanced for packed inputs, zigzag when causal, else contiguous), for
  // the partitions the job builds (job_partitions, preflight.hpp) and for
  // what it records (settings_json).
  PartitionKind effective_partition(bool packed_input) const {
    return partition ? *partition : default_partition(causal, packed_input);
  }
  // The progress style: auto looks at where rank 0's stderr leads.
  ProgressStyle effective_progress() const {
    return progress ? *progress : default_progress_style();
  }
  // This config with every "auto" choice made as a run on such an input
  // makes it: what the output, the metrics and a resume key record.
  JobConfig as_run(bool packed_input) const {
    JobConfig c = *this;
    c.progress = effective_progress();
    c.partition = effective_partition(packed_input);
    c.transport = effective_transport();
    return c;
  }
};

template <>
struct EnumNames<Backend> {
  static constexpr std::array values{Backend::cpu, Backend::cuda};
  static const char* name(Backend b) { return b == Backend::cuda ? "cuda" : "cpu"; }
};
template <>
struct EnumNames<TransportKind> {
  static constexpr std::array values{TransportKind::mpi, TransportKind::nccl};
  static const char* name(TransportKind t) { return t == TransportKind::nccl ? "nccl" : "mpi"; }
};
template <>
struct EnumNames<OutDType> {
  static constexpr std::array values{OutDType::f32, OutDType::input};
  static const char* name(OutDType t) { return t == OutDType::input ? "input" : "f32"; }
};
template <>
struct EnumNames<PartitionKind> {
  static constexpr std::array values{PartitionKind::contiguous, PartitionKind::zigzag,
                                     PartitionKind::striped, PartitionKind::balanced};
  static const char* name(PartitionKind k) { return partition_name(k); }
};
template <>
struct EnumNames<ProgressStyle> {
  static constexpr std::array values{ProgressStyle::bar, ProgressStyle::lines, ProgressStyle::none};
  static const char* name(ProgressStyle s) {
    return s == ProgressStyle::bar ? "bar" : s == ProgressStyle::lines ? "lines" : "none";
  }
};
template <>
struct EnumNames<ComputeType> {
  static constexpr std::array values{ComputeType::f32, ComputeType::bf16};
  static const char* name(ComputeType c) { return compute_type_name(c); }
};

// The longest --comm-timeout: 31 years, far below where the watchdog's
// deadline (steady_clock nanoseconds, 292 years from boot) would overflow.
inline constexpr double kMaxCommTimeout = 1e9;

template <class T>
using JobSetting = Setting<JobConfig, T>;

// THE table, one function per TOML section: each calls visit(JobSetting<T>)
// for its settings, in the order --print-config, the JSON and --help list
// them. Kept one row per setting, unformatted, so it reads as a table.
namespace settings_table {
using C = JobConfig;
using Str = JobSetting<std::string>;
using Bool = JobSetting<bool>;
using Num = JobSetting<double>;

// clang-format off
template <class Visit>
void input(Visit& visit) {
  visit(Str{.section = "input", .key = "path", .flag = "--input", .member = &C::input,
            .help = "Input HDF5 file"});
  visit(Str{.section = "input", .key = "q", .flag = "--q-name", .member = &C::q_name,
            .help = "Dataset name of the queries", .result = true, .resume_name = "q_dataset"});
  visit(Str{.section = "input", .key = "k", .flag = "--k-name", .member = &C::k_name,
            .help = "Dataset name of the keys", .result = true, .resume_name = "k_dataset"});
  visit(Str{.section = "input", .key = "v", .flag = "--v-name", .member = &C::v_name,
            .help = "Dataset name of the values", .result = true, .resume_name = "v_dataset"});
  visit(Str{.section = "input", .key = "do", .flag = "--do-name", .member = &C::do_name,
            .help = "Dataset name of the upstream gradient dO [B, H, N, D] (--backward)",
            .result = true, .resume_name = "do_dataset"});
  visit(Bool{.section = "input", .key = "allow_nonfinite", .flag = "--allow-nonfinite",
             .member = &C::allow_nonfinite,
             .help = "Accept NaN or Inf in q, k, v (default: refuse, naming the first bad "
                     "element). Accepted, they are not the float64 reference's IEEE results: "
                     "docs/reliability.md says what each gives"});
}

template <class Visit>
void output(Visit& visit) {
  visit(Str{.section = "output", .key = "path", .flag = "--output", .member = &C::output,
            .help = "Output HDF5 file (never replaced without --overwrite)"});
  visit(Bool{.section = "output", .key = "lse", .flag = "--lse", .member = &C::lse,
             .help = "Also write lse [B, H, N] (f32, natural log)", .result = true});
  visit(JobSetting<OutDType>{.section = "output", .key = "dtype", .flag = "--out-dtype",
                             .member = &C::o_dtype,
                             .help = "Type of o: f32, or input (the input's)", .result = true,
                             .resume_name = "o_dtype"});
  visit(Bool{.section = "output", .key = "overwrite", .flag = "--overwrite",
             .member = &C::overwrite, .help = "Replace an existing output file"});
}

template <class Visit>
void attention(Visit& visit) {
  visit(Bool{.section = "attention", .key = "causal", .flag = "--causal", .member = &C::causal,
             .help = "Causal masking: token j visible to token i when j <= i", .result = true,
             .off_flag = "--no-causal"});
  visit(JobSetting<Window>{.section = "attention", .key = "window", .flag = "--window",
                           .member = &C::window,
                           .help = "Attention window: token j visible to token i when "
                                   "i - L <= j <= i + R (L alone: R unbounded; causal caps R at "
                                   "0; none: every token). Out-of-window work is skipped",
                           .result = true});
  // A normal float32: the kernel's scale is a float, and below FLT_MIN it
  // would silently become 0, which means 1/sqrt(D).
  visit(JobSetting<float>{.section = "attention", .key = "scale", .flag = "--scale",
                          .member = &C::scale, .help = "Softmax scale",
                          .rule = {.lo = FLT_MIN, .hi = FLT_MAX, .zero = "1/sqrt(D)"},
                          .result = true});
  visit(JobSetting<ComputeType>{.section = "attention", .key = "compute", .flag = "--compute",
                                .member = &C::compute,
                                .help = "Tile-product precision (bf16: Q, K, P, V rounded to "
                                        "bf16, fp32 accumulation; on AMX tiles where the CPU "
                                        "has AMX-BF16, about 3x the fp32 speed, else bf16 dot "
                                        "products where it has AVX512_BF16, about 1.7x)",
                                .result = true});
}

template <class Visit>
void ring(Visit& visit) {
  visit(JobSetting<std::optional<PartitionKind>>{
      .section = "ring", .key = "partition", .flag = "--partition", .member = &C::partition,
      .help = "How tokens are split over ranks: contiguous, zigzag, striped, balanced (cut by "
              "visible work); auto: balanced for packed inputs, zigzag when causal, else "
              "contiguous",
      .result = true});
  visit(JobSetting<std::optional<TransportKind>>{
      .section = "ring", .key = "transport", .flag = "--transport", .member = &C::transport,
      .help = "How K/V blocks travel: mpi, nccl (cuda backend only), or auto = nccl with cuda, "
              "else mpi"});
  visit(Num{.section = "ring", .key = "comm_timeout", .flag = "--comm-timeout",
            .member = &C::comm_timeout,
            .help = "Seconds a rank may wait on a peer before the whole job is aborted with exit "
                    "code 6; must exceed the longest ring step",
            .rule = {.lo = 0, .hi = kMaxCommTimeout, .zero = "wait forever", .unit = "seconds"}});
}

template <class Visit>
void run(Visit& visit) {
  visit(JobSetting<int>{.section = "run", .key = "threads", .flag = "--threads",
                        .member = &C::threads, .help = "Threads per rank",
                        .rule = {.lo = 0, .hi = 4096,
                                 .zero = "the rank's share of its node's cores"}});
  visit(JobSetting<std::int64_t>{
      .section = "run", .key = "kv_heads_per_chunk", .flag = "--kv-heads-per-chunk",
      .member = &C::kv_heads_per_chunk,
      .help = "K/V heads (with their query heads) per streamed chunk; memory grows with it",
      .rule = {.lo = 1}, .result = true});
  visit(Str{.section = "run", .key = "metrics", .flag = "--metrics", .member = &C::metrics,
            .help = "Write per-rank metrics JSON to this file"});
  visit(JobSetting<std::optional<ProgressStyle>>{
      .section = "run", .key = "progress", .flag = "--progress", .member = &C::progress,
      .help = "How rank 0 shows progress: bar (redrawn in place), lines (timestamped, every "
              "--progress-interval seconds: for batch logs), none; auto: bar when stderr reaches "
              "a terminal, through mpirun too, else lines"});
  visit(Num{.section = "run", .key = "progress_interval", .flag = "--progress-interval",
            .member = &C::progress_interval,
            .help = "Seconds between progress lines (--progress lines)",
            .rule = {.lo = 0, .above = true, .unit = "seconds"}});
  visit(JobSetting<Backend>{.section = "run", .key = "backend", .flag = "--backend",
                            .member = &C::backend,
                            .help = "Where the attention kernel runs: cpu, or cuda (one GPU per "
                                    "rank, chosen by node-local rank)",
                            .result = true});
  visit(Num{.section = "run", .key = "memory_limit_mb", .flag = "--memory-limit-mb",
            .member = &C::memory_limit_mb,
            .help = "Per-rank memory budget in MiB, checked before anything is read",
            .rule = {.lo = 0, .zero = "the rank's share of its node's memory", .unit = "MiB"}});
  visit(Bool{.section = "run", .key = "resume", .flag = "--resume", .member = &C::resume,
             .help = "Continue an interrupted run (exit code 7) from its partial output, after "
                     "checking that the input, settings and ranks are the same; without a "
                     "partial output, start from the beginning"});
  visit(Num{.section = "run", .key = "checkpoint_interval", .flag = "--checkpoint-interval",
            .member = &C::checkpoint_interval,
            .help = "Seconds between progress records in the partial output: a crash loses at "
                    "most this much finished work (a stop signal records at once)",
            .rule = {.lo = 0, .zero = "after every chunk", .unit = "seconds"}});
}

template <class Visit>
void gradients(Visit& visit) {
  visit(Bool{.section = "gradients", .key = "backward", .flag = "--backward",
             .member = &C::backward,
             .help = "Also compute the gradients dq [B, H, N, D], dk and dv [B, H_kv, N_k, D] "
                     "(f32) for the input's dO (--do-name); CPU backend, compute f32",
             .result = true});
  visit(Bool{.section = "gradients", .key = "reuse_forward", .flag = "--reuse-forward",
             .member = &C::reuse_forward,
             .help = "With --backward: read o and lse from the input (datasets 'o' and 'lse', "
                     "as a forward run wrote them) instead of computing them",
             .result = true});
}
// clang-format on

}  // namespace settings_table

// Calls visit(JobSetting<T>{...}) for every setting, section by section
// (input, output, attention, ring, run, gradients).
template <class Visit>
void for_each_setting(Visit&& visit) {
  settings_table::input(visit);
  settings_table::output(visit);
  settings_table::attention(visit);
  settings_table::ring(visit);
  settings_table::run(visit);
  settings_table::gradients(visit);
}

// Checks every setting's value as a flag or config file would (for structs
// filled in code), then the rules across settings: an input and an output
// are given; --transport nccl needs --backend cuda. Throws Error(usage).
void check_job_config(const JobConfig& cfg);

// Collective over comm, before any work: every rank's settings are the same
// (an MPMD launch can give ranks different flags), or every rank throws the
// same Error(usage) naming the first setting that differs and two ranks'
// values: "ranks were started with different settings: attention.causal is
// true on rank 0 but false on rank 1". One all-reduce when they agree.
void agree_settings(MPI_Comm comm, const JobConfig& cfg);

// Every setting as JSON, {"input": {"path": ...}, ...}, each as it ran on
// an input with packed documents (packed_input) or without: an "auto"
// choice as what it resolved to, cfg.as_run(packed_input) (stored with the
// output, metrics).
std::string settings_json(const JobConfig& cfg, bool packed_input);

// The settings that change the result's bits, as one flat JSON object keyed
// by their resume names (part of the resume key), resolved as settings_json.
std::string result_settings_json(const JobConfig& cfg, bool packed_input);

// Every setting as it was given ("auto" stays "auto"), keyed "section.key",
// in table order: what the ranks compare.
std::string canonical_settings_json(const JobConfig& cfg);

}  // namespace ringattn
