// The run (see job.hpp). Memory per rank is bounded by one chunk's shards:
// q (h_q, n_q/P, D) and lse, the ring's two K/V buffers (K and V are read
// into the first) and its state (whose acc becomes o), and the kernel's
// packed K/V, never by B x H.
#include "job/job.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <hdf5.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "comm/agree.hpp"
#include "comm/device_select.hpp"
#include "comm/watchdog.hpp"
#include "core/aligned_buffer.hpp"
#include "core/cpu.hpp"
#include "core/error.hpp"
#include "core/timer.hpp"
#include "core/version.hpp"
#include "io/nonfinite.hpp"
#include "io/output_file.hpp"
#include "job/fault_injection.hpp"
#include "job/metrics.hpp"
#include "job/preflight.hpp"
#include "job/progress.hpp"
#include "job/stop_request.hpp"
#include "ring/cpu_ring.hpp"
#include "ring/device_ring.hpp"

namespace ringattn {
namespace {

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux reports KiB
}

// The chunk's f32 inputs keep the kernel's fp32 sums finite: scores
// |s| <= scale * D * max|q| * max|k| (taken to base 2, then differenced),
// and acc = sum of p * v with l <= N_k. A quarter of FLT_MAX leaves room for
// both. Beyond that o would come out as Inf or NaN with exit 0.
void check_values_fit_fp32(MPI_Comm comm, const JobConfig& cfg, const InputInfo& info,
                           const void* q, std::size_t nq, const void* k, const void* v,
                           std::size_t nk) {
  constexpr double kLimit = FLT_MAX / 4.0;
  const double qmax = max_abs_finite(comm, q, info.dtype, nq);
  const double kmax = max_abs_finite(comm, k, info.dtype, nk);
  const double vmax = max_abs_finite(comm, v, info.dtype, nk);
  const double scale = cfg.scale != 0 ? cfg.scale : 1.0 / std::sqrt(static_cast<double>(info.D));
  const double smax = scale * 1.4426950408889634 * static_cast<double>(info.D) * qmax * kmax;
  const std::string file = "input file '" + info.file.path + "'";
  RA_CHECK(smax <= kLimit, input, file, ": values of '", info.q.name, "' (up to ",
           short_number(qmax), ") and '", info.k.name, "' (up to ", short_number(kmax),
           ") give attention scores up to ", short_number(smax), ", beyond fp32's range (",
           short_number(kLimit), "); rescale the input or lower the scale");
  RA_CHECK(vmax * static_cast<double>(info.Nkv) <= kLimit, input, file, ", dataset '", info.v.name,
           "': values up to ", short_number(vmax), " with ", info.Nkv,
           " keys can overflow the fp32 sums of attention (max|v| x N_k must stay below ",
           short_number(kLimit), "); rescale the input");
}

std::string hostname() {
  char h[256] = "?";
  gethostname(h, sizeof h - 1);
  return h;
}

}  // namespace

std::string config_json(const JobConfig& c) {
  return settings_json(c);
}

std::string resume_key_json(const JobConfig& c, const InputInfo& info, int ranks) {
  nlohmann::json j = nlohmann::json::parse(result_settings_json(c));
  j["input_path"] = info.file.path;
  j["input_size"] = info.file.size;
  j["input_mtime_ns"] = info.file.mtime_ns;
  j["input_inode"] = info.file.inode;
  // The files the input links to are read too: a change of one is a change.
  nlohmann::json linked = nlohmann::json::array();
  for (const FileIdentity& f : info.linked) linked.push_back({f.path, f.size, f.mtime_ns, f.inode});
  j["input_linked"] = linked;
  j["ranks"] = ranks;
  return j.dump();
}

JobReport run_job(MPI_Comm comm, const JobConfig& cfg) {
  Timer wall;
  int rank = 0, P = 1;
  RA_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  RA_MPI_CHECK(MPI_Comm_size(comm, &P));
  // The settings: valid (the same checks on every rank, agreed so the
  // message, which names the rank that raised it, is identical everywhere),
  // and the same on every rank (an MPMD launch can differ).
  agree(comm, [&] { check_job_config(cfg); });
  agree_settings(comm, cfg);
  // Before any file is opened: the launch itself, and the devices.
  check_slurm_world(comm);
  if (cfg.backend == Backend::cuda) check_cuda_backend(comm);
  std::optional<FaultPlan> fault;
  agree(comm, [&] { fault = fault_plan_from_env(); });
  set_comm_timeout(cfg.comm_timeout);

  RankMetrics m;
  m.host = hostname();
  InputFile in = InputFile::open(comm, cfg.input, {cfg.q_name, cfg.k_name, cfg.v_name});
  const InputInfo& info = in.info();
  // Tokens per rank, head dim, the memory budget, where the metrics go:
  // before anything big exists.
  preflight(comm, cfg, info);
  check_metrics_target(comm, cfg, info);

  JobReport report;
  report.input = info;
  report.ranks = P;
  report.threads = cfg.threads > 0 ? cfg.threads : default_threads();
  report.partition = cfg.effective_partition();
  const Partition qp(report.partition, info.Nq, P), kp(report.partition, info.Nkv, P);
  const std::int64_t group = info.Hq / info.Hkv;
  const std::int64_t hk_chunk = std::min(cfg.kv_heads_per_chunk, info.Hkv);
  const std::int64_t chunks_per_batch = (info.Hkv + hk_chunk - 1) / hk_chunk;
  report.chunks = info.B * chunks_per_batch;

  OutputSpec spec;
  spec.path = cfg.output;
  spec.overwrite = cfg.overwrite;
  spec.input_path = cfg.input;
  spec.B = info.B;
  spec.H = info.Hq;
  spec.N = info.Nq;
  spec.D = info.D;
  spec.o_dtype = cfg.o_dtype == OutDType::input ? info.dtype : DType::f32;
  spec.with_lse = cfg.lse;
  spec.resume = cfg.resume;
  spec.resume_key = resume_key_json(cfg, info, P);
  spec.chunks = report.chunks;
  for (const FileIdentity& l : info.linked) spec.linked_inputs.push_back(l.path);
  std::optional<OutputFile> out_holder;
  {
    CommWatch watch("creating the output file (collective)");
    out_holder.emplace(OutputFile::create(comm, spec));
  }
  OutputFile& out = *out_holder;
  report.chunks_resumed = out.chunks_done();
  report.partial_path = out.temp_path();

  // Chunk buffers, sized for the largest chunk. K and V are read into the
  // ring's home block, and o is the ring's output().
  const std::int64_t nq = qp.local_size(rank), nkv = kp.local_size(rank), D = info.D;
  const std::size_t es = dtype_size(info.dtype);
  const std::int64_t hq_max = hk_chunk * group;
  AlignedBuffer<char> q(static_cast<std::size_t>(hq_max * nq * D) * es);  // (hq, nq, D)
  AlignedBuffer<float> lse(static_cast<std::size_t>(hq_max * nq));        // (hq, nq)

  // One ring for the whole run: the CPU kernel over MPI, or the device ring.
  std::unique_ptr<Ring> ring;
  if (cfg.backend == Backend::cuda)
    ring = std::make_unique<DeviceRing>(comm, choice_name(cfg.effective_transport()),
                                        cfg.comm_timeout);
  else
    ring = std::make_unique<CpuRing>(comm);
  RingOptions opt;
  opt.causal = cfg.causal;
  opt.scale = cfg.scale;
  opt.compute = cfg.compute;
  opt.threads = report.threads;
  Progress progress(rank == 0, report.chunks, static_cast<double>(info.Nq * hq_max),
                    cfg.progress_interval);

  std::int64_t done = out.chunks_done();
  // Progress inside a chunk too, step by step: a 1M-token chunk is minutes.
  // The same hook injects the test faults (job/fault_injection.hpp).
  opt.on_step = [&](int step, int steps) {
    maybe_inject_fault(fault, rank, done, step);
    progress.update(static_cast<double>(done) + static_cast<double>(step) / steps);
  };
  std::int64_t chunk = -1;
  Timer since_record;
  for (std::int64_t b = 0; b < info.B && !report.stopped_by; ++b)
    for (std::int64_t hk0 = 0; hk0 < info.Hkv; hk0 += hk_chunk) {
      if (++chunk < out.chunks_done()) continue;  // written by the run we resume
      const std::int64_t hkc = std::min(hk_chunk, info.Hkv - hk0);
      const BatchHeadRange qr{b, 1, hk0 * group, hkc * group}, kr{b, 1, hk0, hkc};
      const std::string chunk_text = "chunk " + std::to_string(chunk);
      const RingLayout layout{qp, kp, {info.dtype, 1, hkc, D}, hkc * group};
      KvBlockRef kv;  // (hkc, nkv, D) K, then V
      try {
        kv = ring->home_block(layout);
      } catch (const Error& e) {
        abort_job(e);  // an allocation only this rank failed: see abort_job
      }
      Timer t;
      {
        CommWatch watch("collective read of " + chunk_text);
        in.read_shard(InputTensor::q, qp, qr, info.dtype, q.data());
        in.read_shard(InputTensor::k, kp, kr, info.dtype, kv.k());
        in.read_shard(InputTensor::v, kp, kr, info.dtype, kv.v());
        if (!cfg.allow_nonfinite) {
          check_finite_shard(comm, q.data(), info.dtype, qr, qp.positions(rank), D, cfg.input,
                             info.q.name);
          check_finite_shard(comm, kv.k(), info.dtype, kr, kp.positions(rank), D, cfg.input,
                             info.k.name);
          check_finite_shard(comm, kv.v(), info.dtype, kr, kp.positions(rank), D, cfg.input,
                             info.v.name);
        }
      }
      if (info.dtype == DType::f32)
        check_values_fit_fp32(comm, cfg, info, q.data(),
                              static_cast<std::size_t>(hkc * group * nq * D), kv.k(), kv.v(),
                              static_cast<std::size_t>(hkc * nkv * D));
      m.io_read_s += t.seconds();
      m.bytes_read +=
          static_cast<double>((hkc * group * nq + 2 * hkc * nkv) * D) * static_cast<double>(es);

      RingStats st;
      try {
        st = ring->run(layout, q.data(), cfg.lse ? lse.data() : nullptr, opt);
      } catch (const Error& e) {
        abort_job(e);  // one rank's failure mid-ring: its peers wait in the ring
      }
      m.compute_s += st.compute_s + st.finalize_s;
      m.comm_wait_s += st.wait_s;
      m.flops += st.flops;
      m.bytes_sent += static_cast<double>(st.bytes_sent);

      t.reset();
      {
        CommWatch watch("collective write of " + chunk_text);
        out.write_o(qp, qr, DType::f32, ring->output());
        if (cfg.lse) out.write_lse(qp, qr, lse.data());
      }
      m.io_write_s += t.seconds();
      m.bytes_written += static_cast<double>(hkc * group * nq * D) *
                             static_cast<double>(dtype_size(spec.o_dtype)) +
                         (cfg.lse ? static_cast<double>(hkc * group * nq) * 4.0 : 0.0);
      ++done;
      // One all-reduce per chunk: a stop signal on any rank (all stop here
      // together, unless this was the last chunk), and whether the progress
      // record is due. Recording flushes the file (about 1 ms a chunk here,
      // a quarter of a run of 512 tiny chunks), hence the interval.
      int flags[2] = {stop_signal_received(),
                      since_record.seconds() >= cfg.checkpoint_interval ? 1 : 0};
      {
        CommWatch watch("agreeing on a stop after " + chunk_text);
        RA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, flags, 2, MPI_INT, MPI_MAX, comm));
      }
      const bool stop = flags[0] != 0 && done < report.chunks;
      if ((stop || flags[1]) && done < report.chunks) {
        CommWatch watch("recording progress after " + chunk_text);
        check_input_unchanged(comm, info);  // what was read is what the record vouches for
        out.mark_chunks_done(done);         // on disk: a stop or crash keeps it
        since_record.reset();
      }
      if (stop) {
        report.stopped_by = flags[0];
        break;
      }
    }
  report.chunks_done = done;
  if (report.stopped_by) {
    CommWatch watch("closing the partial output");
    out.suspend();
    report.wall_s = wall.seconds();
    m.wall_s = report.wall_s;
    report.per_rank.push_back(m);
    return report;
  }
  progress.finish();

  std::vector<std::pair<std::string, AttrValue>> attrs = {
      {"ringattn_version", std::string(kVersion)},
      {"ringattn_git_commit", std::string(kGitCommit)},
      {"config", config_json(cfg)},
      {"ranks", static_cast<std::int64_t>(P)},
      {"threads_per_rank", static_cast<std::int64_t>(report.threads)},
      {"partition", std::string(partition_name(report.partition))},
      {"causal", static_cast<std::int64_t>(cfg.causal)},
      {"scale",
       static_cast<double>(cfg.scale != 0 ? cfg.scale : 1.0f / std::sqrt(static_cast<float>(D)))},
      {"compute", std::string(compute_type_name(cfg.compute))},
      {"q_dataset", cfg.q_name},
      {"k_dataset", cfg.k_name},
      {"v_dataset", cfg.v_name},
  };
  for (auto& a : identity_attributes(info.file)) attrs.push_back(std::move(a));
  if (out.resumed()) attrs.push_back({"resumed_at_chunk", report.chunks_resumed});
  Timer t;
  {
    CommWatch watch("committing the output file (collective)");
    check_input_unchanged(comm, info);
    out.set_attributes(attrs);
    out.commit();
  }
  m.io_write_s += t.seconds();
  CommWatch watch_gather("gathering metrics (collective)");

  m.wall_s = wall.seconds();
  m.peak_rss_mb = peak_rss_mb();
  // Every rank's metrics to rank 0 (numbers; host names separately).
  const double mine[10] = {m.wall_s, m.compute_s,  m.comm_wait_s, m.io_read_s,     m.io_write_s,
                           m.flops,  m.bytes_sent, m.bytes_read,  m.bytes_written, m.peak_rss_mb};
  std::vector<double> all(rank == 0 ? 10 * static_cast<std::size_t>(P) : 0);
  RA_MPI_CHECK(MPI_Gather(mine, 10, MPI_DOUBLE, all.data(), 10, MPI_DOUBLE, 0, comm));
  char host[256] = {};
  std::snprintf(host, sizeof host, "%s", m.host.c_str());
  std::vector<char> hosts(rank == 0 ? 256 * static_cast<std::size_t>(P) : 0);
  RA_MPI_CHECK(MPI_Gather(host, 256, MPI_CHAR, hosts.data(), 256, MPI_CHAR, 0, comm));
  report.wall_s = m.wall_s;
  RA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &report.wall_s, 1, MPI_DOUBLE, MPI_MAX, comm));
  if (rank == 0) {
    for (int r = 0; r < P; ++r) {
      const double* a = all.data() + 10 * r;
      RankMetrics x{a[0],
                    a[1],
                    a[2],
                    a[3],
                    a[4],
                    a[5],
                    a[6],
                    a[7],
                    a[8],
                    a[9],
                    std::string(hosts.data() + 256 * r)};
      report.per_rank.push_back(x);
    }
  } else {
    report.per_rank.push_back(m);
  }
  return report;
}

}  // namespace ringattn
