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
//                  backend's own (threads, a progress hook); with poll, move
//                  the hop along meanwhile (Open MPI moves a large message
//                  only when polled). Returns the kernel's seconds.
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

// What a layout must satisfy before a ring of P ranks sizes anything for it.
inline void check_ring_layout(const RingLayout& layout, int P) {
  RA_CHECK(layout.q_part.ranks() == P && layout.kv_part.ranks() == P, usage, "partitions for ",
           layout.q_part.ranks(), "/", layout.kv_part.ranks(), " ranks used on a ring of ", P);
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

    AttnParams p =
        ring_step_params(layout, r, backend.queries(), q_pos, backend.block(cur), st.source, opt);
    st.skipped = ring_step_skipped(q_range, p.k_pos, p.visibility());
    if (!st.skipped) st.flops = attention_flops(p);
    st.compute_s = backend.fold(st.skipped ? nullptr : &p, hop_now && opt.poll);
    if (hop_now) {
      const Timer t;
      hop.wait();
      st.wait_s = t.seconds();
      cur = 1 - cur;
    }

    stats.compute_s += st.compute_s;
    stats.wait_s += st.wait_s;
    stats.flops += st.flops;
    stats.bytes_sent += st.bytes_sent;
    stats.steps.push_back(st);
    stats.steps_done = s + 1;
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

}  // namespace ringattn
