// What attended to what: the exact attention weights of selected query rows
// of a finished run (`ringattn weights`), or each row's top K keys.
//
// For row i of head h, over the keys j it sees (the run's causal rule,
// window and packed sequences, from its output's attributes), in float64 on
// the values as stored: s_j = scale · q_i · k_j, lse = log Σ exp(s_j), and
// w_j = exp(s_j - lse), so the weights of a row that sees any key sum to 1
// (to float32 rounding in the file). The matrix is never formed.
//
// Distributed over the ranks of comm by keys: rank p holds a contiguous
// shard of N_k / P keys of K (and no more), and for each plane computes, one
// row of its shard's scores per thread at a time, each row's largest score
// m_p and Σ exp(s_j - m_p) over its keys (and its K best keys); the ranks
// all-reduce those into the row's lse = M + log Σ_p sum_p · exp(m_p - M), M
// the largest m_p (one rank: exactly what one process computes). Full rows
// are then computed on each shard and gathered into rank 0's columns, top K
// candidates gathered and merged on rank 0, which alone writes the file
// (io/weights_file.hpp's). When the run wrote lse, rank 0 reports its
// largest difference from this exact lse (a check of the run).
//
// Rows: a comma-separated list of token indices I, half-open ranges A:B and
// strided ranges A:B:S (every S-th token of [A, B); ::S is every S-th of
// all), each within [0, N), and token=ID: every position whose token id
// (the input's `tokens` [B, N], as the converters write it) is ID in some
// batch row; heads alike over [0, H) or "all". When the input has token
// ids the file records each row's (row_tokens). Full rows need
// B · Hs · R · N_k floats of file and R · N_k of memory: past 1 GiB of
// memory the request is refused with a pointer to --top-k.
//
// Includes: mpi.h (MPI_Comm), <cstdint>, <string>, <vector>, core/shape.hpp
// (AttnShape).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/shape.hpp"

namespace ringattn {

struct WeightsRequest {
  std::string input, output;  // the run's input and its output
  std::string to;             // the weights file to write
  std::string rows = "0";
  std::string heads = "all";
  std::int64_t top_k = 0;  // 0: full rows
  bool overwrite = false;
};

struct WeightsReport {
  AttnShape shape;
  std::int64_t rows = 0, heads = 0;
  std::int64_t rows_without_keys = 0;  // (b, h, i) rows that see no key
  double max_sum_error = 0;            // max |Σ_j w_j - 1| of the weights as written
  bool has_run_lse = false;
  double max_lse_difference = 0;  // max |lse_run - lse| over rows that see keys
  double seconds = 0;
};

// Sorted, distinct indices in [0, n) from a spec as above; throws
// Error(usage) naming `what` and the bad item.
std::vector<std::int64_t> parse_index_spec(const std::string& spec, std::int64_t n,
                                           const std::string& what);

// Collective over comm: every rank returns, or every rank throws the same
// Error (comm/agree.hpp). The report is rank 0's (others: shape and counts).
WeightsReport write_attention_weights(MPI_Comm comm, const WeightsRequest& req);

}  // namespace ringattn
