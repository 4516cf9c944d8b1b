// The CPU ring (see cpu_ring.hpp): its backend for the step loop of
// ring_loop.hpp, and the buffers it keeps from run to run.
#include "ring/cpu_ring.hpp"

#include "core/error.hpp"
#include "core/timer.hpp"
#include "kernel/attention.hpp"
#include "ring/ring_loop.hpp"

namespace ringattn {
namespace {

void poll_transport(void* t) {
  static_cast<Transport*>(t)->progress();
}

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

  double fold(AttnParams* p, bool poll) {
    const Timer t;
    if (p) {
      p->threads = threads_;
      p->cpu = cpu_;
      if (poll) {
        // MPI moves a large message only while the process calls into it.
        p->progress = poll_transport;
        p->progress_arg = &t_;
      }
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

}  // namespace

CpuRing::CpuRing(MPI_Comm comm) : transport_(comm) {}

KvBlockRef CpuRing::home_block(const RingLayout& layout) {
  check_ring_layout(layout, transport_.size());
  const std::size_t capacity = KvBlock::largest(layout.kv, layout.kv_part).bytes();
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

}  // namespace ringattn
