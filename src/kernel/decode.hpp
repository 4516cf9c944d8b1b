// The streaming decode kernel: a few query rows against a long, resident K/V
// block (a service answering one or a few new tokens against a context of up
// to millions of keys). attention_forward packs the whole K block transposed
// into f32 on every call, which for a handful of query rows reads and rewrites
// all of K per request; this kernel reads K and V once, in their storage type,
// and converts them a tile at a time in cache.
//
// All rows of one kv head's query group (n_q · heads_q / heads_kv rows) share
// every K/V tile, so the bytes streamed do not grow with the group. The keys of
// each (batch, kv head) are split into fixed chunks (a function of the problem
// only, never of the thread count); each chunk keeps its own running state
// (m, l, acc) and the chunks merge in a fixed pairwise order, so the result is
// bit-identical for any p.threads.
//
//   kernel/params.hpp     AttnParams, the problem
//   kernel/attention.hpp  attention_forward: the same contract, and what
//                         decode_attention runs for compute = bf16
#pragma once

#include <cstddef>

#include "kernel/params.hpp"

namespace ringattn {

// Few query rows against a long K/V block, K and V read once, in their storage
// type. Same contract as attention_forward(p, o, lse): o (batch, heads_q, n_q,
// head_dim) f32 dense, lse (batch, heads_q, n_q) natural log or nullptr; rows
// with no visible key: o = 0, lse = -inf. Honours every field of p; p.cpu.isa
// generic selects the portable loops, any other the AVX2 path where the CPU
// has AVX2, FMA and F16C. compute = bf16 runs attention_forward (whose bf16
// rounding this kernel does not repeat).
void decode_attention(const AttnParams& p, float* o, float* lse);

// Whether decode_attention is the better kernel for p: f32 compute and at most
// 64 query rows per kv head group (n_q · heads_q / heads_kv).
bool decode_suits(const AttnParams& p);

// Bytes decode_attention allocates for p (workspace), for memory planning.
std::size_t decode_workspace_bytes(const AttnParams& p);
// What the calling thread's last decode_attention allocated, counted at each
// allocation: tests check the estimate above against it.
std::size_t last_decode_workspace_bytes();

}  // namespace ringattn
