// The CPU fused attention kernel: the operations of DESIGN.md's math.
//
//   update_state  fold one K/V block into the running state (flash-attention
//                 forward over tiles; empty causal tiles cost nothing)
//   finalize      o = acc / l, lse = m + log(l); rows that saw no visible key
//                 give o = 0, lse = -inf
//   merge         combine two (o, lse) results computed apart
//   attention_forward  reset + update_state + finalize, for one whole block
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernel/params.hpp"
#include "kernel/state.hpp"

namespace ringattn {

// Fold the K/V block described by p into s. s must have been made for
// (p.batch, p.heads_q, p.n_q, p.head_dim).
void update_state(const AttnParams& p, AttnState& s);

// o: (batch, heads, rows, head_dim) f32, dense; may be s.acc.data() (in place). lse: (batch, heads,
// rows) f32, natural log, or nullptr. threads: as many as the caller may use.
void finalize(const AttnState& s, float* o, float* lse, int threads = 1);

// Per row r < rows: (o, lse) = merge((o_a, lse_a), (o_b, lse_b)), rows of
// head_dim floats. o and lse may alias o_a and lse_a (in-place merge).
void merge(std::int64_t rows, std::int64_t head_dim, const float* o_a, const float* lse_a,
           const float* o_b, const float* lse_b, float* o, float* lse);

// The whole attention of one block: o (batch, heads_q, n_q, head_dim) f32,
// lse (batch, heads_q, n_q) f32 or nullptr.
void attention_forward(const AttnParams& p, float* o, float* lse);

// Flops of the tile products the problem needs: 4·D per visible (query, key)
// pair, counted exactly on global positions (so causal is about half).
double attention_flops(const AttnParams& p);

// Bytes of the buffers update_state(p, s) allocates: packed K^T and V tiles,
// positions, and p.threads threads' tiles. Memory planning (preflight) adds
// this to the inputs' and the state's own bytes.
std::size_t update_state_workspace_bytes(const AttnParams& p);
// What the calling thread's last update_state allocated, counted at each
// allocation: tests check the estimate above against it.
std::size_t last_update_state_workspace_bytes();

// Which inner implementation update_state uses on this CPU, for reports:
// e.g. "libxsmm-avx2 bq=64 bk=64".
std::string kernel_implementation(const AttnParams& p);

}  // namespace ringattn
