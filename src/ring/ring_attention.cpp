// The ring step loop with double buffers (see ring_attention.hpp).
#include "ring/ring_attention.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

#include "core/aligned_buffer.hpp"
#include "core/error.hpp"
#include "core/timer.hpp"
#include "kernel/attention.hpp"
#include "kernel/state.hpp"
#include "ring/ring_schedule.hpp"

namespace ringattn {
namespace {

void poll_transport(void* t) {
  static_cast<Transport*>(t)->progress();
}

}  // namespace

std::uint64_t ring_block_bytes(const Partition& kv_part, int r, const RingShards& shards) {
  return 2ull *
         static_cast<std::uint64_t>(shards.batch * shards.heads_kv * kv_part.local_size(r) *
                                    shards.head_dim) *
         dtype_size(shards.dtype);
}

RingStats ring_attention(Transport& transport, const Partition& q_part, const Partition& kv_part,
                         const RingShards& shards, float* o, float* lse, const RingOptions& opt) {
  AttnState state(shards.batch, shards.heads_q, q_part.local_size(transport.rank()),
                  shards.head_dim);
  const RingStats st = ring_attention(transport, q_part, kv_part, shards, state, lse, opt);
  std::copy_n(state.acc.data(), state.acc.size(), o);
  return st;
}

RingStats ring_attention(Transport& transport, const Partition& q_part, const Partition& kv_part,
                         const RingShards& shards, AttnState& state, float* lse,
                         const RingOptions& opt) {
  const int P = transport.size(), r = transport.rank();
  RA_CHECK(q_part.ranks() == P && kv_part.ranks() == P, usage, "partitions for ", q_part.ranks(),
           "/", kv_part.ranks(), " ranks used on a ring of ", P);
  const std::int64_t nq = q_part.local_size(r);
  const std::int64_t B = shards.batch, HK = shards.heads_kv, D = shards.head_dim;
  const std::size_t es = dtype_size(shards.dtype);

  Timer total;
  RingStats stats;

  // Two ring buffers of the largest block; K then V inside: (2, B, HK, n, D).
  const std::uint64_t capacity = 2ull * B * HK * kv_part.max_local_size() * D * es;
  AlignedBuffer<char> cur(capacity), next(capacity);
  {
    const std::uint64_t half = ring_block_bytes(kv_part, r, shards) / 2;
    std::memcpy(cur.data(), shards.k, half);
    std::memcpy(cur.data() + half, shards.v, half);
  }

  RA_CHECK(
      state.batch == B && state.heads == shards.heads_q && state.rows == nq && state.head_dim == D,
      internal, "ring state shape does not match the shards");
  state.reset();
  const Positions q_pos = q_part.positions(r);
  const auto [q_lo, q_hi] = position_range(q_pos);

  for (int s = 0; s < P; ++s) {
    RingStepStats st;
    st.source = ring_step_source(r, s, P);
    const int incoming = ring_step_incoming(r, s, P);
    const bool hop = s + 1 < P;
    if (hop) {
      st.bytes_sent = ring_block_bytes(kv_part, st.source, shards);
      transport.start(cur.data(), st.bytes_sent, next.data(),
                      ring_block_bytes(kv_part, incoming, shards));
    }

    AttnParams p =
        ring_step_params(shards, shards.q, cur.data(), nq, q_pos, kv_part, st.source, opt);
    p.threads = opt.threads;
    if (hop && opt.poll) {
      p.progress = poll_transport;
      p.progress_arg = &transport;
    }
    st.skipped = ring_step_skipped(q_lo, q_hi, p.k_pos, opt.causal);

    Timer t;
    if (!st.skipped) {
      st.flops = attention_flops(p);
      update_state(p, state);
    }
    st.compute_s = t.seconds();
    if (hop) {
      t.reset();
      transport.wait();
      st.wait_s = t.seconds();
      std::swap(cur, next);
    }
    stats.compute_s += st.compute_s;
    stats.wait_s += st.wait_s;
    stats.flops += st.flops;
    stats.bytes_sent += st.bytes_sent;
    stats.steps.push_back(st);
    if (opt.on_step) opt.on_step(opt.on_step_arg, s + 1, P);
  }

  Timer t;
  finalize(state, state.acc.data(), lse, opt.threads);  // in place: acc becomes o
  stats.finalize_s = t.seconds();
  stats.total_s = total.seconds();
  return stats;
}

}  // namespace ringattn
