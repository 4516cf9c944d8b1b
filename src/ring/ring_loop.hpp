// THE ring step loop (DESIGN.md, ring layer), written once and run by every
// ring: CpuRing (cpu_ring.cpp) and DeviceRing (device_ring.cpp). A ring is a
// backend plus this loop, the way nccl-tests writes its timing loop once and
// each collective supplies a few functions. So the invariant DESIGN's
// pitfalls turn on, "every rank makes the same transfers in the same order,
// whatever it computes", is kept in one place: the hop is started and
// finished at every step but the last, skipped steps included.
//
// Includes: comm/transport.hpp (the hop), kernel/attention.hpp
// (attention_flops), ring/ring_schedule.hpp (the step arithmetic).
#pragma once

#include <concepts>

#include "comm/transport.hpp"
#include "core/error.hpp"
#include "core/positions.hpp"
#include "core/timer.hpp"
#include "kernel/attention.hpp"
#include "kernel/backward.hpp"
#include "ring/ring.hpp"
#include "ring/ring_schedule.hpp"

namespace ringattn {

// What a backend supplies to the loop:
//   transport()    the hop between its two block buffers (comm/transport.hpp)
//   block(i)       block buffer i (0 or 1) where its kernel reads it; buffer
//                  0 holds this rank's own block when a run begins
//   queries()      this rank's queries where its kernel reads them
//   begin()        before the first step: the queries and the home block
//                  readable by the kernel, the state reset (for a fresh run)
//   fold(p, poll)  fold the block p describes into the state (nullptr: the
//                  step is skipped, nothing to fold), adding to p what is the
//                  backend's own (threads, tile shape); with poll, move the
//                  hop along meanwhile (Open MPI moves a large message only
//                  when polled): a CPU kernel through p's progress hook,
//                  which the loop sets (StepHook). Returns the kernel's
//                  seconds.
//   finalize()     normalise the state into o (and lse); returns its seconds
template <class B>
concept RingBackend = requires(B& b, AttnParams* p, bool poll) {
  { b.transport() } -> std::same_as<Transport&>;
  { b.block(0) } -> std::same_as<char*>;
  { b.queries() } -> std::same_as<const void*>;
  b.begin();
  { b.fold(p, poll) } -> std::same_as<double>;
  { b.finalize() } -> std::same_as<double>;
};

// The kernel's in-call hook (AttnParams::progress) for step `step`: moves
// the hop along (hop set: Open MPI moves a large message only when polled)
// and passes the step's progress on to opt.on_compute, throttled.
struct StepHook {
  Transport* hop = nullptr;  // nullptr: nothing in flight, or no polling
  const RingOptions* opt = nullptr;
  int step = 0;
  Timer since_report;

  static void call(void* self, double done) {
    auto* h = static_cast<StepHook*>(self);
    if (h->hop) h->hop->progress();
    if (h->opt->on_compute && h->since_report.seconds() >= RingOptions::kComputeReportInterval) {
      h->opt->on_compute(h->step + done);
      h->since_report.reset();
    }
  }
  // Sets p's hook to this one, when there is anything for it to do.
  void attach(AttnParams& p) {
    if (!hop && !opt->on_compute) return;
    p.progress = &StepHook::call;
    p.progress_arg = this;
  }
};

// What a layout must satisfy before a ring of P ranks sizes anything for it.
inline void check_ring_layout(const RingLayout& layout, int P) {
  RA_CHECK(layout.q_part.ranks() == P && layout.kv_part.ranks() == P, usage, "partitions for ",
           layout.q_part.ranks(), "/", layout.kv_part.ranks(), " ranks used on a ring of ", P);
}

// Step s's fold, the same in both loops: the params of the block in buffer
// cur, whether the step is skipped, its flops (`flops`: the forward's or the
// backward's count) and the kernel's seconds, the hook moving the hop along
// while it is in flight (hop_now).
template <class Backend>
void fold_step(Backend& backend, const RingLayout& layout, const Positions& q_pos,
               const PositionRange& q_range, int s, int cur, bool hop_now, const RingOptions& opt,
               double (*flops)(const AttnParams&), RingStepStats& st) {
  Transport& hop = backend.transport();
  AttnParams p = ring_step_params(layout, hop.rank(), backend.queries(), q_pos, backend.block(cur),
                                  st.source, opt);
  st.skipped = ring_step_skipped(q_range, p.k_pos, p.visibility());
  if (!st.skipped) st.flops = flops(p);
  StepHook hook{hop_now && opt.poll ? &hop : nullptr, &opt, s, {}};
  hook.attach(p);
  st.compute_s = backend.fold(st.skipped ? nullptr : &p, hop_now && opt.poll);
}

// Waits for the hop started this step, timed as the step's exposed wait; the
// buffer it received into holds the block in hand from now on.
inline void finish_hop(Transport& hop, RingStepStats& st, int& cur) {
  const Timer t;
  hop.wait();
  st.wait_s = t.seconds();
  cur = 1 - cur;
}

// Step s's figures into the run's totals.
inline void record_step(RingStats& stats, const RingStepStats& st, int s) {
  stats.compute_s += st.compute_s;
  stats.wait_s += st.wait_s;
  stats.flops += st.flops;
  stats.bytes_sent += st.bytes_sent;
  stats.steps.push_back(st);
  stats.steps_done = s + 1;
}

// One run of the ring over layout: the backend's buffer 0 holds this rank's
// block (KvBlock's layout). Collective over the backend's transport.
template <RingBackend Backend>
RingStats run_ring(Backend& backend, const RingLayout& layout, const RingOptions& opt) {
  Transport& hop = backend.transport();
  const int P = hop.size(), r = hop.rank();
  check_ring_layout(layout, P);
  RA_CHECK(opt.first_step >= 0 && opt.first_step < P, internal, "a ring run from step ",
           opt.first_step, " of ", P);

  const Timer total;
  RingStats stats;
  backend.begin();
  const Positions q_pos = layout.q_coordinates(r);
  const PositionRange q_range = q_pos.range();
  int cur = 0;  // the buffer holding the block in hand; the other receives

  for (int s = opt.first_step; s < P; ++s) {
    RingStepStats st;
    st.source = ring_step_source(r, s, P);
    const bool hop_now = s + 1 < P;
    if (hop_now) {
      st.bytes_sent = layout.block(st.source).bytes();
      st.bytes_received = layout.block(ring_step_incoming(r, s, P)).bytes();
      hop.start(backend.block(cur), st.bytes_sent, backend.block(1 - cur), st.bytes_received);
    }

    fold_step(backend, layout, q_pos, q_range, s, cur, hop_now, opt, attention_flops, st);
    if (hop_now) finish_hop(hop, st, cur);

    record_step(stats, st, s);
    if (s + 1 < P && opt.stop_after && opt.stop_after(s + 1)) {
      stats.stopped = true;  // unfinished: a later run reads step s + 1's block afresh
      stats.total_s = total.seconds();
      return stats;
    }
    // After the stop agreement: a rank that stalls here (a test's injected
    // hang) leaves its peers waiting on its next hop, which names it.
    if (opt.on_step) opt.on_step(s + 1, P);
  }

  stats.finalize_s = backend.finalize();
  stats.total_s = total.seconds();
  return stats;
}

// What a backend supplies to the backward loop (run_ring_backward):
//   transport(), block(i), queries()  as for the forward; a block buffer
//                  holds a K/V block and, after it, the gradients (dK, dV,
//                  f32) of the block that travels with it
//   begin()        before the first step: the query side ready, dQ zeroed
//   fold(p, poll)  the gradients of the block p describes into the
//                  backend's own part buffer (zeroed first; nullptr: the
//                  step is skipped, the part stays 0); returns seconds
//   add_part(g, n, first)  g (+)= the part (first: g = the part), g the
//                  gradients of the block folded (n floats), in a block buffer
//   finish(g)      dq out, and g (in a block buffer) this rank's own dK, dV
template <class B>
concept RingGradBackend = requires(B& b, AttnParams* p, bool poll, float* g, std::size_t n) {
  { b.transport() } -> std::same_as<Transport&>;
  { b.block(0) } -> std::same_as<char*>;
  { b.queries() } -> std::same_as<const void*>;
  b.begin();
  { b.fold(p, poll) } -> std::same_as<double>;
  b.add_part(g, n, poll);
  { b.finish(static_cast<const float*>(g)) } -> std::same_as<double>;
};

// The backward's ring (DESIGN.md, backward). dQ stays home; each block's
// gradients travel with it one step behind, so that every hop overlaps a
// fold: at step s rank r folds the block of ring_step_source(r, s) into a
// part of its own while the hop moves, in one message each way,
//
//   K/V of that block (s < P-1)  +  the gradients of step s-1's block (s >= 1)
//
// and receives the next K/V block with the gradients its own step s block
// gathered on the ranks before; it adds its part to those. After the last
// step one more hop takes each block's gradients, now summed over every
// rank, home (ring_step_source(r, P-1) is rank r + 1). So every rank makes
// the same P hops (plus the last) in the same order whatever it computes,
// and the gradients stay fp32 from the first rank to the owner.
//
// Within a buffer the gradients sit right after the K/V they arrived with
// (or at 0 when none came): the offset is what a hop's message makes it.
template <RingGradBackend Backend>
RingStats run_ring_backward(Backend& backend, const RingLayout& layout, const RingOptions& opt) {
  Transport& hop = backend.transport();
  const int P = hop.size(), r = hop.rank();
  check_ring_layout(layout, P);
  RA_CHECK(opt.first_step == 0 && !opt.stop_after, internal,
           "a backward ring run cannot continue or stop between steps");
  const Timer total;
  RingStats stats;
  backend.begin();
  const Positions q_pos = layout.q_coordinates(r);
  const PositionRange q_range = q_pos.range();
  int cur = 0;
  std::size_t grad_at[2] = {0, 0};  // where each buffer's gradients begin
  auto grads = [&](int i) { return reinterpret_cast<float*>(backend.block(i) + grad_at[i]); };

  for (int s = 0; s < P; ++s) {
    RingStepStats st;
    st.source = ring_step_source(r, s, P);
    const bool kv_out = s + 1 < P, grads_out = s >= 1;
    const int incoming = ring_step_incoming(r, s, P);
    const std::size_t kv_send = kv_out ? layout.block(st.source).bytes() : 0;
    const std::size_t kv_recv = kv_out ? layout.block(incoming).bytes() : 0;
    const bool hop_now = P > 1;
    if (hop_now) {
      // Out: this block's K/V and behind them the last step's gradients,
      // which arrived there with it. In: the next block, and behind it the
      // gradients of this step's block.
      const char* send = backend.block(cur) + (kv_out ? 0 : grad_at[cur]);
      st.bytes_sent =
          kv_send + (grads_out ? layout.block(ring_step_source(r, s - 1, P)).grad_bytes() : 0);
      st.bytes_received = kv_recv + (grads_out ? layout.block(st.source).grad_bytes() : 0);
      grad_at[1 - cur] = kv_recv;
      hop.start(send, st.bytes_sent, backend.block(1 - cur), st.bytes_received);
    }

    fold_step(backend, layout, q_pos, q_range, s, cur, hop_now, opt, attention_backward_flops, st);
    if (hop_now)
      finish_hop(hop, st, cur);
    else
      grad_at[cur] = layout.block(st.source).bytes();
    // This step's block's gradients: received behind the next block (or, on
    // one rank, kept behind its own).
    backend.add_part(grads(cur), layout.block(st.source).grad_bytes() / sizeof(float),
                     /*first=*/!grads_out);

    record_step(stats, st, s);
    if (opt.on_step) opt.on_step(s + 1, P);
  }
  if (P > 1) {
    // Home: the last block's summed gradients to its owner, rank r + 1.
    const std::size_t out = layout.block(ring_step_source(r, P - 1, P)).grad_bytes();
    const std::size_t in = layout.block(r).grad_bytes();
    grad_at[1 - cur] = 0;
    const Timer t;
    hop.start(grads(cur), out, backend.block(1 - cur), in);
    hop.wait();
    stats.wait_s += t.seconds();
    stats.bytes_sent += out;
    cur = 1 - cur;
  }
  stats.finalize_s = backend.finish(grads(cur));
  stats.total_s = total.seconds();
  return stats;
}

}  // namespace ringattn
