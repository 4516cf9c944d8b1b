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
#include <type_traits>
#include <vector>

#include "comm/agree.hpp"
#include "comm/device_select.hpp"
#include "comm/watchdog.hpp"
#include "core/aligned_buffer.hpp"
#include "core/cpu.hpp"
#include "core/error.hpp"
#include "core/message_text.hpp"
#include "core/timer.hpp"
#include "core/version.hpp"
#include "io/chunk_state.hpp"
#include "io/nonfinite.hpp"
#include "io/output_file.hpp"
#include "job/fault_injection.hpp"
#include "job/metrics.hpp"
#include "job/preflight.hpp"
#include "job/progress.hpp"
#include "job/stop_request.hpp"
#include "ring/cpu_ring.hpp"
#include "ring/device_ring.hpp"
#include "ring/ring_schedule.hpp"

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
  const double scale =
      cfg.scale != 0 ? cfg.scale : 1.0 / std::sqrt(static_cast<double>(info.shape.head_dim));
  const double smax =
      scale * 1.4426950408889634 * static_cast<double>(info.shape.head_dim) * qmax * kmax;
  const std::string file = "input file '" + info.file.path + "'";
  RA_CHECK(smax <= kLimit, input, file, ": values of '", info.q.name, "' (up to ",
           short_number(qmax), ") and '", info.k.name, "' (up to ", short_number(kmax),
           ") give attention scores up to ", short_number(smax), ", beyond fp32's range (",
           short_number(kLimit), "); rescale the input or lower the scale");
  RA_CHECK(vmax * static_cast<double>(info.shape.tokens_kv) <= kLimit, input, file, ", dataset '",
           info.v.name, "': values up to ", short_number(vmax), " with ", info.shape.tokens_kv,
           " keys can overflow the fp32 sums of attention (max|v| x N_k must stay below ",
           short_number(kLimit), "); rescale the input");
}

std::string hostname() {
  char h[256] = "?";
  gethostname(h, sizeof h - 1);
  return h;
}

}  // namespace

std::string config_json(const JobConfig& c, bool packed_input) {
  return settings_json(c, packed_input);
}

std::string resume_key_json(const JobConfig& c, const InputInfo& info, int ranks) {
  nlohmann::json j = nlohmann::json::parse(result_settings_json(c, info.packed()));
  j["input_path"] = info.file.path;
  j["input_size"] = info.file.size;
  j["input_mtime_ns"] = info.file.mtime_ns;
  j["input_inode"] = info.file.inode;
  // The files the input links to are read too: a change of one is a change.
  nlohmann::json linked = nlohmann::json::array();
  for (const FileIdentity& f : info.linked) linked.push_back({f.path, f.size, f.mtime_ns, f.inode});
  j["input_linked"] = linked;
  j["ranks"] = ranks;
  // The backward kernel's dq sums per thread: its bits depend on the count.
  if (c.backward) j["threads"] = c.threads > 0 ? c.threads : default_threads();
  return j.dump();
}

namespace {

// One run as short steps, in order: validate, open the input, create the
// output, then chunk by chunk (read the shards, go round the ring, write),
// then commit and gather the metrics. Every step is collective; the members
// are declared so that the ring, then the output, then the input close.
class Job {
 public:
  Job(MPI_Comm comm, const JobConfig& cfg) : comm_(comm), cfg_(cfg) {
    RA_MPI_CHECK(MPI_Comm_rank(comm, &rank_));
    RA_MPI_CHECK(MPI_Comm_size(comm, &ranks_));
  }

  JobReport run() {
    validate();
    open_input();
    create_output();
    start_ring();
    run_chunks();
    report_.chunks_done = done_;
    if (report_.stopped_by) return suspend();
    progress_->finish();
    commit();
    gather_metrics();
    return report_;
  }

 private:
  // The (batch, K/V head group) a chunk covers, and its buffers' views.
  struct Chunk {
    std::int64_t index, hk_count;
    BatchHeadRange q_range, kv_range;
    RingLayout layout;
    KvBlockRef kv;  // (hk_count, n_kv, D) K, then V: the ring's home block
    std::string text;
    int first_step = 0;  // > 0: a stopped chunk continues at this ring step,
    int kv_holder = 0;   // whose K/V block the home block holds then
  };

  void validate();
  void open_input();
  void create_output();
  void start_ring();
  void run_chunks();
  Chunk chunk_at(std::int64_t index, std::int64_t b, std::int64_t hk0);
  void resume_inside(Chunk& c);
  void read_chunk(Chunk& c);
  void read_gradient_inputs(const Chunk& c);
  bool compute_chunk(const Chunk& c);
  void compute_gradients(const Chunk& c);
  void write_chunk(const Chunk& c);
  bool record_or_stop(const Chunk& c);
  JobReport suspend();
  void commit();
  void gather_metrics();
  std::vector<std::pair<std::string, AttrValue>> result_attributes() const;

  const InputInfo& info() const { return input_->info(); }
  std::int64_t group() const { return info().shape.heads_q / info().shape.heads_kv; }

  MPI_Comm comm_;
  const JobConfig& cfg_;
  int rank_ = 0, ranks_ = 1;
  Timer wall_;
  RankMetrics m_;
  JobReport report_;
  std::optional<FaultPlan> fault_;
  std::optional<InputFile> input_;
  std::optional<Partition> qp_, kp_;  // tokens of q and of k/v over the ranks
  std::int64_t hk_chunk_ = 1;         // K/V heads per chunk
  std::optional<OutputFile> output_;
  AlignedBuffer<char> q_;     // (hq, nq, D): this rank's queries of a chunk
  AlignedBuffer<float> lse_;  // (hq, nq)
  // Backward runs: dO and o (hq, nq, D) f32, and the home block kept aside.
  AlignedBuffer<float> d_o_, o_;
  AlignedBuffer<char> kv_copy_;
  std::unique_ptr<Ring> ring_;
  RingOptions opt_;
  std::optional<Progress> progress_;
  std::int64_t done_ = 0;  // chunks the output holds
  // Where a ring run's steps fall in its chunk's progress (start, share): a
  // backward chunk's forward is 2 of its 7 units of work (the backward 5).
  static constexpr double kForwardShare = 2.0 / 7.0;
  std::pair<double, double> phase_{0.0, 1.0};
  int fault_step_offset_ = 0;  // RINGATTN_FAULT numbers a backward chunk's steps on
  Timer since_record_;
  std::string resume_key_;  // the partial output's (and a stopped chunk's state file's)
  int stop_signal_ = 0;     // the signal a ring step's stop agreement saw
};

// The settings: valid (the same checks on every rank, agreed so the message,
// which names the rank that raised it, is identical everywhere) and the same
// on every rank (an MPMD launch can differ); then the launch and the devices,
// before any file is opened.
void Job::validate() {
  agree(comm_, [&] { check_job_config(cfg_); });
  agree_settings(comm_, cfg_);
  check_slurm_world(comm_);
  if (cfg_.backend == Backend::cuda) check_cuda_backend(comm_);
  agree(comm_, [&] { fault_ = fault_plan_from_env(); });
  set_comm_timeout(cfg_.comm_timeout);
  const std::string host = hostname();
  std::snprintf(m_.host, sizeof m_.host, "%s", host.c_str());
}

// The input, then what must hold before anything big exists: tokens per
// rank, head dim, the memory budget, where the metrics go.
void Job::open_input() {
  InputNames names{.q = cfg_.q_name, .k = cfg_.k_name, .v = cfg_.v_name};
  if (cfg_.backward) names.d_o = cfg_.do_name;
  if (cfg_.reuse_forward) {
    names.o = "o";
    names.lse = "lse";
  }
  input_.emplace(InputFile::open(comm_, cfg_.input, names));
  RingPartitions parts = preflight(comm_, cfg_, info(), input_->documents());
  check_metrics_target(comm_, cfg_, info());
  report_.input = info();
  report_.documents = input_->documents();
  report_.ranks = ranks_;
  report_.threads = cfg_.threads > 0 ? cfg_.threads : default_threads();
  if (const std::string w = oversubscription_warning(report_.threads); rank_ == 0 && !w.empty())
    std::fprintf(stderr, "ringattn: warning: %s\n", w.c_str());
  report_.partition = parts.kind;
  qp_.emplace(std::move(parts.q));
  kp_.emplace(std::move(parts.kv));
  hk_chunk_ = std::min(cfg_.kv_heads_per_chunk, info().shape.heads_kv);
  report_.chunks = info().shape.batch * ((info().shape.heads_kv + hk_chunk_ - 1) / hk_chunk_);
}

void Job::create_output() {
  OutputSpec spec;
  spec.path = cfg_.output;
  spec.overwrite = cfg_.overwrite;
  spec.input_path = cfg_.input;
  for (const FileIdentity& l : info().linked) spec.linked_inputs.push_back(l.path);
  spec.B = info().shape.batch;
  spec.H = info().shape.heads_q;
  spec.N = info().shape.tokens_q;
  spec.D = info().shape.head_dim;
  spec.o_dtype = cfg_.o_dtype == OutDType::input ? info().dtype : DType::f32;
  spec.with_lse = cfg_.lse || cfg_.backward;  // verify checks dk, dv against the run's lse
  spec.with_gradients = cfg_.backward;
  spec.H_kv = info().shape.heads_kv;
  spec.N_kv = info().shape.tokens_kv;
  spec.resume = cfg_.resume;
  spec.resume_key = resume_key_ = resume_key_json(cfg_, info(), ranks_);
  spec.chunks = report_.chunks;
  CommWatch watch("creating the output file (collective)");
  output_.emplace(OutputFile::create(comm_, spec));
  if (!output_->resumed()) remove_chunk_state(comm_, cfg_.output);  // an older run's
  report_.resumed = output_->resumed();
  report_.chunks_resumed = done_ = output_->chunks_done();
  report_.partial_path = output_->temp_path();
}

// Buffers for the largest chunk (K and V live in the ring's home block, o
// is the ring's output), and one ring for the whole run: the CPU kernel
// over MPI, or the device ring.
void Job::start_ring() {
  const std::int64_t nq = qp_->local_size(rank_), hq_max = hk_chunk_ * group();
  q_.resize(static_cast<std::size_t>(hq_max * nq * info().shape.head_dim) *
            dtype_size(info().dtype));
  lse_.resize(static_cast<std::size_t>(hq_max * nq));
  if (cfg_.backward) {
    const std::size_t q_floats = static_cast<std::size_t>(hq_max * nq * info().shape.head_dim);
    d_o_.resize(q_floats);
    o_.resize(q_floats);
  }
  if (cfg_.backend == Backend::cuda)
    ring_ = make_device_ring(comm_, choice_name(cfg_.effective_transport()), cfg_.comm_timeout);
  else
    ring_ = std::make_unique<CpuRing>(comm_);
  opt_.causal = cfg_.causal;
  opt_.window = cfg_.window;
  opt_.scale = cfg_.scale;
  opt_.compute = cfg_.compute;
  opt_.threads = report_.threads;
  progress_.emplace(rank_ == 0, cfg_.effective_progress(), report_.chunks,
                    static_cast<double>(info().shape.tokens_q * hq_max), cfg_.progress_interval);
  // Progress inside a chunk too, step by step: a 1M-token chunk is minutes.
  // The same hook injects the test faults (job/fault_injection.hpp).
  opt_.on_step = [this](int step, int steps) {
    maybe_inject_fault(fault_, rank_, done_, step + fault_step_offset_);
    progress_->update(static_cast<double>(done_) + phase_.first +
                      phase_.second * static_cast<double>(step) / steps);
  };
  // And within a step: one step of a 1M-token job on two ranks is minutes.
  opt_.on_compute = [this](double steps_done) {
    progress_->update(static_cast<double>(done_) + phase_.first +
                      phase_.second * steps_done / ranks_);
  };
  // A ring that can save its state stops at the next ring step, not at the
  // chunk's end: one chunk can be a long sequence that outlasts Slurm's
  // signal lead. One all-reduce per step, between kernel calls.
  // A backward run stops between chunks only (its ring cannot stop inside one).
  if (ring_->resumable_state() && !cfg_.backward)
    opt_.stop_after = [this](int step) {
      CommWatch watch("agreeing on a stop after ring step " + std::to_string(step));
      int signal = stop_signal_received();
      RA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &signal, 1, MPI_INT, MPI_MAX, comm_));
      stop_signal_ = signal;
      return signal != 0;
    };
}

void Job::run_chunks() {
  progress_->begin(static_cast<double>(done_));
  std::int64_t index = -1;
  for (std::int64_t b = 0; b < info().shape.batch; ++b)
    for (std::int64_t hk0 = 0; hk0 < info().shape.heads_kv; hk0 += hk_chunk_) {
      if (++index < done_) continue;  // written by the run we resume
      Chunk c = chunk_at(index, b, hk0);
      if (output_->resumed() && index == report_.chunks_resumed) resume_inside(c);
      read_chunk(c);
      if (!compute_chunk(c)) return;  // stopped between ring steps
      write_chunk(c);
      if (c.first_step > 0) remove_chunk_state(comm_, cfg_.output);
      if (record_or_stop(c)) return;
    }
}

Job::Chunk Job::chunk_at(std::int64_t index, std::int64_t b, std::int64_t hk0) {
  const std::int64_t hk = std::min(hk_chunk_, info().shape.heads_kv - hk0);
  Chunk c{index,
          hk,
          {b, 1, hk0 * group(), hk * group()},
          {b, 1, hk0, hk},
          RingLayout{*qp_,
                     *kp_,
                     {info().dtype, 1, hk, info().shape.head_dim},
                     hk * group(),
                     input_->documents(),
                     cfg_.backward},
          {},
          "chunk " + std::to_string(index),
          0,
          rank_};
  try {
    c.kv = ring_->home_block(c.layout);
  } catch (const Error& e) {
    abort_job(e);  // an allocation only this rank failed: its peers go on to the read
  }
  return c;
}

// The first chunk of a resumed run, when a stop between its ring steps kept
// its state (io/chunk_state.hpp): the state goes back into the ring, and
// the home block will hold the K/V block of the step it continues at.
void Job::resume_inside(Chunk& c) {
  AttnState* state = ring_->resumable_state();
  if (!state) return;
  const ChunkStateView view{state->heads, state->head_dim, state->m2.data(), state->l.data(),
                            state->acc.data()};
  CommWatch watch("loading the state of " + c.text);
  c.first_step = load_chunk_state(comm_, cfg_.output, {resume_key_, c.index, 0}, *qp_, view);
  if (c.first_step == 0) return;
  c.kv_holder = ring_step_source(rank_, c.first_step, ranks_);
  c.kv.layout = c.layout.block(c.kv_holder);
  report_.steps_resumed = c.first_step;
}

// The chunk's shards, checked: no NaN or Inf (unless allowed), and values
// that keep the fp32 sums finite.
void Job::read_chunk(Chunk& c) {
  Timer t;
  const InputInfo& in = info();
  const std::int64_t D = in.shape.head_dim, nq = qp_->local_size(rank_),
                     nkv = kp_->local_size(c.kv_holder);
  {
    CommWatch watch("collective read of " + c.text);
    input_->read_shard(InputTensor::q, *qp_, c.q_range, in.dtype, q_.data());
    input_->read_shard(InputTensor::k, *kp_, c.kv_range, in.dtype, c.kv.k(), c.kv_holder);
    input_->read_shard(InputTensor::v, *kp_, c.kv_range, in.dtype, c.kv.v(), c.kv_holder);
    if (cfg_.backward) read_gradient_inputs(c);
    if (!cfg_.allow_nonfinite) {
      const Positions qrows = qp_->positions(rank_), kvrows = kp_->positions(c.kv_holder);
      check_finite_shard(comm_, q_.data(), in.dtype, c.q_range, qrows, D, cfg_.input, in.q.name);
      check_finite_shard(comm_, c.kv.k(), in.dtype, c.kv_range, kvrows, D, cfg_.input, in.k.name);
      check_finite_shard(comm_, c.kv.v(), in.dtype, c.kv_range, kvrows, D, cfg_.input, in.v.name);
      if (cfg_.backward)
        check_finite_shard(comm_, d_o_.data(), DType::f32, c.q_range, qrows, D, cfg_.input,
                           in.d_o.name);
      if (cfg_.reuse_forward)
        check_finite_shard(comm_, o_.data(), DType::f32, c.q_range, qrows, D, cfg_.input,
                           in.o.name);
    }
    const auto q_count = static_cast<std::size_t>(c.q_range.h_count * nq * D);
    const auto kv_count = static_cast<std::size_t>(c.hk_count * nkv * D);
    if (in.dtype == DType::f32)
      check_values_fit_fp32(comm_, cfg_, in, q_.data(), q_count, c.kv.k(), c.kv.v(), kv_count);
  }
  m_.io_read_s += t.seconds();
  m_.bytes_read += static_cast<double>((c.q_range.h_count * nq + 2 * c.hk_count * nkv) * D) *
                   static_cast<double>(dtype_size(in.dtype));
}

// A backward chunk's dO (and, reusing a forward, its o and lse), as f32.
void Job::read_gradient_inputs(const Chunk& c) {
  const InputInfo& in = info();
  const std::int64_t rows = c.q_range.h_count * qp_->local_size(rank_);
  input_->read_shard(InputTensor::d_o, *qp_, c.q_range, DType::f32, d_o_.data());
  double bytes =
      static_cast<double>(rows * in.shape.head_dim) * static_cast<double>(in.d_o.type.bytes);
  if (cfg_.reuse_forward) {
    input_->read_shard(InputTensor::o, *qp_, c.q_range, DType::f32, o_.data());
    input_->read_shard(InputTensor::lse, *qp_, c.q_range, DType::f32, lse_.data());
    bytes += static_cast<double>(rows * in.shape.head_dim) * static_cast<double>(in.o.type.bytes) +
             static_cast<double>(rows) * static_cast<double>(in.lse.type.bytes);
  }
  m_.bytes_read += bytes;
}

// Goes round the ring; false when a stop signal ended it between two ring
// steps: then the chunk's state is saved and the job stops there.
bool Job::compute_chunk(const Chunk& c) {
  if (cfg_.backward) {
    compute_gradients(c);
    return true;
  }
  RingStats st;
  RingOptions opt = opt_;
  opt.first_step = c.first_step;
  try {
    st = ring_->run(c.layout, q_.data(), cfg_.lse ? lse_.data() : nullptr, opt);
  } catch (const Error& e) {
    abort_job(e);  // one rank's failure mid-ring: its peers wait in the ring
  }
  m_.compute_s += st.compute_s + st.finalize_s;
  m_.comm_wait_s += st.wait_s;
  m_.flops += st.flops;
  m_.bytes_sent += static_cast<double>(st.bytes_sent);
  if (!st.stopped) return true;
  const AttnState& s = *ring_->resumable_state();
  {
    CommWatch watch("saving the state of " + c.text);
    save_chunk_state(comm_, cfg_.output, {resume_key_, c.index, st.steps_done}, *qp_,
                     {s.heads, s.head_dim, const_cast<float*>(s.m2.data()),
                      const_cast<float*>(s.l.data()), const_cast<float*>(s.acc.data())});
    check_input_unchanged(comm_, info());
    output_->mark_chunks_done(done_);  // the chunks before this one, verified
  }
  report_.stopped_by = stop_signal_;
  report_.steps_done = st.steps_done;
  return false;
}

// A backward chunk: the forward for o and lse (unless the input had them),
// then the backward ring over the same blocks. The forward leaves other
// ranks' blocks in the ring's buffers, so the home block is kept aside
// first and put back for the backward.
void Job::compute_gradients(const Chunk& c) {
  RingStats fwd, bwd;
  try {
    const std::size_t kv_bytes = c.kv.layout.bytes();
    if (!cfg_.reuse_forward) {
      kv_copy_.resize(kv_bytes);
      std::copy_n(c.kv.data, kv_bytes, kv_copy_.data());
      phase_ = {0.0, kForwardShare};
      fwd = ring_->run(c.layout, q_.data(), lse_.data(), opt_);
      fault_step_offset_ = ranks_;  // the backward's steps come after the forward's
      const std::size_t o_floats = static_cast<std::size_t>(
          c.q_range.h_count * qp_->local_size(rank_) * info().shape.head_dim);
      std::copy_n(ring_->output(), o_floats, o_.data());
      const KvBlockRef home = ring_->home_block(c.layout);
      std::copy_n(kv_copy_.data(), kv_bytes, home.data);
    }
    phase_ = cfg_.reuse_forward ? std::pair{0.0, 1.0} : std::pair{kForwardShare, 1 - kForwardShare};
    bwd = ring_->run_backward(c.layout, q_.data(), {d_o_.data(), o_.data(), lse_.data()}, opt_);
    phase_ = {0.0, 1.0};
    fault_step_offset_ = 0;
  } catch (const Error& e) {
    abort_job(e);  // one rank's failure mid-ring: its peers wait in the ring
  }
  for (const RingStats* st : {&fwd, &bwd}) {
    m_.compute_s += st->compute_s + st->finalize_s;
    m_.comm_wait_s += st->wait_s;
    m_.flops += st->flops;
    m_.bytes_sent += static_cast<double>(st->bytes_sent);
  }
}

void Job::write_chunk(const Chunk& c) {
  Timer t;
  const double rows = static_cast<double>(c.q_range.h_count * qp_->local_size(rank_));
  const double D = static_cast<double>(info().shape.head_dim);
  {
    CommWatch watch("collective write of " + c.text);
    output_->write_o(*qp_, c.q_range, DType::f32, cfg_.backward ? o_.data() : ring_->output());
    if (output_->spec().with_lse) output_->write_lse(*qp_, c.q_range, lse_.data());
    if (cfg_.backward) {
      const std::size_t kv_floats = c.layout.block(rank_).grad_bytes() / sizeof(float) / 2;
      output_->write_dq(*qp_, c.q_range, ring_->grad_q());
      output_->write_dk(*kp_, c.kv_range, ring_->grad_kv());
      output_->write_dv(*kp_, c.kv_range, ring_->grad_kv() + kv_floats);
      m_.bytes_written += (rows * D + 2.0 * static_cast<double>(kv_floats)) * 4.0;
    }
  }
  m_.io_write_s += t.seconds();
  m_.bytes_written += rows * D * static_cast<double>(dtype_size(output_->spec().o_dtype)) +
                      (output_->spec().with_lse ? rows * 4.0 : 0.0);
  ++done_;
}

// One all-reduce per chunk: a stop signal on any rank (all stop here
// together, unless this was the last chunk), and whether the progress record
// is due. Recording flushes and reads back the file, hence the interval.
// Returns whether to stop.
bool Job::record_or_stop(const Chunk& c) {
  int flags[2] = {stop_signal_received(),
                  since_record_.seconds() >= cfg_.checkpoint_interval ? 1 : 0};
  {
    CommWatch watch("agreeing on a stop after " + c.text);
    RA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, flags, 2, MPI_INT, MPI_MAX, comm_));
  }
  if (done_ == report_.chunks) return false;
  if (flags[0] || flags[1]) {
    CommWatch watch("recording progress after " + c.text);
    check_input_unchanged(comm_, info());  // what was read is what the record vouches for
    output_->mark_chunks_done(done_);      // on disk: a stop or crash keeps it
    since_record_.reset();
  }
  report_.stopped_by = flags[0];
  return flags[0] != 0;
}

JobReport Job::suspend() {
  CommWatch watch("closing the partial output");
  output_->suspend();
  report_.wall_s = m_.wall_s = wall_.seconds();
  report_.per_rank.push_back(m_);
  return report_;
}

std::vector<std::pair<std::string, AttrValue>> Job::result_attributes() const {
  const double scale =
      cfg_.scale != 0 ? cfg_.scale : 1.0f / std::sqrt(static_cast<float>(info().shape.head_dim));
  std::vector<std::pair<std::string, AttrValue>> attrs = {
      {"ringattn_version", std::string(kVersion)},
      {"ringattn_git_commit", std::string(kGitCommit)},
      {"config", config_json(cfg_, report_.documents.is_packed())},
      {"ranks", static_cast<std::int64_t>(ranks_)},
      {"threads_per_rank", static_cast<std::int64_t>(report_.threads)},
      {"partition", std::string(partition_name(report_.partition))},
      {"causal", static_cast<std::int64_t>(cfg_.causal)},
      {"window", cfg_.window.text()},
      {"documents", report_.documents.count()},
      {"gradients", static_cast<std::int64_t>(cfg_.backward)},
      {"scale", scale},
      {"compute", std::string(compute_type_name(cfg_.compute))},
      {"q_dataset", cfg_.q_name},
      {"k_dataset", cfg_.k_name},
      {"v_dataset", cfg_.v_name},
  };
  if (cfg_.backward) attrs.push_back({"do_dataset", cfg_.do_name});
  for (auto& a : identity_attributes(info().file)) attrs.push_back(std::move(a));
  if (output_->resumed()) attrs.push_back({"resumed_at_chunk", report_.chunks_resumed});
  return attrs;
}

void Job::commit() {
  Timer t;
  {
    CommWatch watch("committing the output file (collective)");
    check_input_unchanged(comm_, info());
    output_->set_attributes(result_attributes());
    output_->commit();
  }
  m_.io_write_s += t.seconds();
}

// Every rank's metrics to rank 0, as the struct itself.
void Job::gather_metrics() {
  CommWatch watch("gathering metrics (collective)");
  m_.wall_s = wall_.seconds();
  m_.peak_rss_mb = peak_rss_mb();
  const std::string cpus = thread_cpu_list(report_.threads);
  std::snprintf(m_.cpus, sizeof m_.cpus, "%s", cpus.c_str());  // a longer list is cut
  static_assert(std::is_trivially_copyable_v<RankMetrics>, "gathered as bytes");
  std::vector<RankMetrics> all(rank_ == 0 ? static_cast<std::size_t>(ranks_) : 0);
  RA_MPI_CHECK(MPI_Gather(&m_, sizeof m_, MPI_BYTE, all.data(), sizeof m_, MPI_BYTE, 0, comm_));
  report_.wall_s = m_.wall_s;
  RA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &report_.wall_s, 1, MPI_DOUBLE, MPI_MAX, comm_));
  report_.per_rank = rank_ == 0 ? all : std::vector<RankMetrics>{m_};
}

}  // namespace

JobReport run_job(MPI_Comm comm, const JobConfig& cfg) {
  return Job(comm, cfg).run();
}

}  // namespace ringattn
