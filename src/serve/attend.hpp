// One attend pass of the service: every rank folds its shard of a context
// for a batch of query rows, then the partial results merge exactly onto
// rank 0 (DESIGN.md's merge, as a user operator in an MPI_Reduce tree:
// depth log P, where a ring would take P steps).
//
// A partial result travels as packed rows of 1 + D floats: lse, then o.
//
// Includes: mpi.h, core/visibility.hpp, serve/context_store.hpp.
#pragma once
#include <mpi.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "core/visibility.hpp"
#include "serve/context_store.hpp"

namespace ringattn::serve {

struct AttendBatch {
  std::int64_t heads = 0;  // query heads H (a multiple of the context's heads_kv)
  bool causal = false;
  Window window;
  // (first position, rows) of each request's query rows, in order: rows are
  // laid out [H][sum of rows][D].
  std::vector<std::pair<std::int64_t, std::int64_t>> segments;
};

// This rank's partial result for q [H][N][D] (the context's dtype): packed
// rows [H * N][1 + D]. A rank without rows gives lse = -inf, o = 0.
std::vector<float> attend_shard(const ContextShard& shard, const AttendBatch& b, const void* q,
                                int threads);

// Collective: rows (every rank's packed partials, same size) merged in rank
// order onto rank 0's rows; other ranks' rows are left as they were.
void merge_partials_to_root(MPI_Comm comm, std::vector<float>& rows, std::int64_t head_dim);

}  // namespace ringattn::serve
