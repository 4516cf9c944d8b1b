// The CPU ring (see cpu_ring.hpp): its backend for the step loop of
// ring_loop.hpp, and the buffers it keeps from run to run.
#include "ring/cpu_ring.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "core/timer.hpp"
#include "kernel/attention.hpp"
#include "ring/ring_loop.hpp"

namespace ringattn {
namespace {

// The CPU kernel, host buffers, host transport.
class CpuBackend {
 public:
  CpuBackend(Transport& t, AlignedBuffer<char> (&blocks)[2], AttnState& state, const void* q,
             float* lse, const RingOptions& opt)
      : t_(t),
        blocks_(blocks),
        state_(state),
        q_(q),
        lse_(lse),
        threads_(opt.threads),
        cpu_(opt.cpu),
        fresh_(opt.first_step == 0) {}

  Transport& transport() { return t_; }
  char* block(int i) { return blocks_[i].data(); }
  const void* queries() { return q_; }
  void begin() {
    if (fresh_) state_.reset();  // else it holds the steps a stopped run folded
  }

  // poll: p's progress hook (the loop's StepHook) moves the hop along.
  double fold(AttnParams* p, bool /*poll*/) {
    const Timer t;
    if (p) {
      p->threads = threads_;
      p->cpu = cpu_;
      update_state(*p, state_);
    }
    return t.seconds();
  }

  double finalize() {
    const Timer t;
    ringattn::finalize(state_, state_.acc.data(), lse_, threads_);  // in place: acc becomes o
    return t.seconds();
  }

 private:
  Transport& t_;
  AlignedBuffer<char> (&blocks_)[2];
  AttnState& state_;
  const void* q_;
  float* lse_;
  int threads_;
  CpuVariant cpu_;
  bool fresh_;
};

// The CPU backward kernel: each step's gradients into part, then added
// where the loop says they travel.
class CpuGradBackend {
 public:
  CpuGradBackend(Transport& t, AlignedBuffer<char> (&blocks)[2], GradState& grad,
                 AlignedBuffer<float>& part, float* dq, const AttnParams& queries,
                 const GradInputs& in, const RingOptions& opt)
      : t_(t),
        blocks_(blocks),
        grad_(grad),
        part_(part),
        dq_(dq),
        queries_(queries),
        in_(in),
        threads_(opt.threads),
        cpu_(opt.cpu) {}

  Transport& transport() { return t_; }
  char* block(int i) { return blocks_[i].data(); }
  const void* queries() { return queries_.q.data; }
  void begin() { grad_.reset(queries_, in_); }

  double fold(AttnParams* p, bool /*poll*/) {  // the hook moves the hop, as above
    const Timer t;
    n_ = 0;
    if (p) {
      p->threads = threads_;
      p->cpu = cpu_;
      n_ = static_cast<std::size_t>(p->batch * p->heads_kv * p->n_kv * p->head_dim);
      std::fill_n(part_.data(), 2 * n_, 0.0f);
      grad_.fold(*p, part_.data(), part_.data() + n_);
    }
    return t.seconds();
  }

  // g: dK then dV of the block folded last, n floats in all. A skipped
  // step's part is 0.
  void add_part(float* g, std::size_t n, bool first) {
    if (n_ == 0) {
      if (first) std::fill_n(g, n, 0.0f);
      return;
    }
    RA_CHECK(2 * n_ == n, internal, "a gradient part of ", 2 * n_, " floats added to ", n);
    if (first)
      std::copy_n(part_.data(), n, g);
    else
      for (std::size_t e = 0; e < n; ++e) g[e] += part_[e];
  }

  double finish(const float* own) {
    const Timer t;
    grad_.finish(dq_);
    own_ = own;
    return t.seconds();
  }
  const float* own() const { return own_; }

 private:
  Transport& t_;
  AlignedBuffer<char> (&blocks_)[2];
  GradState& grad_;
  AlignedBuffer<float>& part_;
  float* dq_;
  const AttnParams& queries_;
  const GradInputs& in_;
  int threads_;
  CpuVariant cpu_;
  std::size_t n_ = 0;
  const float* own_ = nullptr;
};

}  // namespace

CpuRing::CpuRing(MPI_Comm comm) : transport_(comm) {}

KvBlockRef CpuRing::home_block(const RingLayout& layout) {
  check_ring_layout(layout, transport_.size());
  const KvBlock largest = KvBlock::largest(layout.kv, layout.kv_part);
  const std::size_t capacity = largest.bytes() + (layout.gradients ? largest.grad_bytes() : 0);
  for (AlignedBuffer<char>& b : blocks_)
    if (b.size() < capacity) b.resize(capacity);
  const std::int64_t nq = layout.q_part.local_size(transport_.rank());
  const KvShape& kv = layout.kv;
  if (state_.batch != kv.batch || state_.heads != layout.heads_q || state_.rows != nq ||
      state_.head_dim != kv.head_dim)
    state_ = AttnState(kv.batch, layout.heads_q, nq, kv.head_dim);
  prepared_ = layout;
  return {blocks_[0].data(), layout.block(transport_.rank())};
}

RingStats CpuRing::run(const RingLayout& layout, const void* q, float* lse,
                       const RingOptions& opt) {
  // A run leaves other ranks' blocks in the buffers: each run needs its own
  // home_block() first.
  RA_CHECK(prepared_ && *prepared_ == layout, internal,
           "CpuRing::run without home_block() for its layout");
  prepared_.reset();
  CpuBackend backend(transport_, blocks_, state_, q, lse, opt);
  return run_ring(backend, layout, opt);
}

RingStats CpuRing::run_backward(const RingLayout& layout, const void* q, const GradInputs& in,
                                const RingOptions& opt) {
  RA_CHECK(prepared_ && *prepared_ == layout && layout.gradients, internal,
           "CpuRing::run_backward without home_block() for its layout with gradients");
  prepared_.reset();
  const int r = transport_.rank();
  const std::int64_t nq = layout.q_part.local_size(r), D = layout.kv.head_dim;
  const KvBlock largest = KvBlock::largest(layout.kv, layout.kv_part);
  part_.resize(largest.grad_bytes() / sizeof(float));
  dq_.resize(static_cast<std::size_t>(layout.kv.batch * layout.heads_q * nq * D));
  // The queries' side of every step's problem (its K/V side is the step's).
  AttnParams queries =
      ring_step_params(layout, r, q, layout.q_coordinates(r), blocks_[0].data(), r, opt);
  queries.threads = opt.threads;
  queries.cpu = opt.cpu;
  CpuGradBackend backend(transport_, blocks_, grad_, part_, dq_.data(), queries, in, opt);
  RingStats st = run_ring_backward(backend, layout, opt);
  own_grads_ = backend.own();
  return st;
}

}  // namespace ringattn
