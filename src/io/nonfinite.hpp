// NaN and Inf in the inputs, refused with the first bad element named.
//
// One NaN in q, k or v spreads through the softmax into every output row
// that sees it, and the run would still end "successfully" hours later. So
// after each shard read the job scans what it read (unless the user passed
// --allow-nonfinite): each rank finds its own first non-finite element, the
// ranks agree on the first one in the dataset's row-major order, and every
// rank throws the same Error naming it. The scan reads the exponent bits
// only (f32: 0x7f800000, f16: 0x7c00, bf16: 0x7f80 all set), a block at a
// time with a branch-free OR that the compiler vectorises; a flagged block
// is then searched element by element. Cost: one pass over the shard,
// O(N·D) against the ring's O(N²·D) flops.
//
// Includes: mpi.h (MPI_Comm), core/dtype.hpp (DType), io/shard_io.hpp
// (BatchHeadRange), core/positions.hpp (Positions).
#pragma once

#include <mpi.h>

#include <array>
#include <cstdint>
#include <string>

#include "core/dtype.hpp"
#include "core/positions.hpp"
#include "io/shard_io.hpp"

namespace ringattn {

// Where a non-finite element sits in the dataset [B, H, N, D], and what it is.
struct NonfiniteElement {
  std::array<std::int64_t, 4> index{};  // [b, h, n, d], global
  enum Kind { nan = 0, pos_inf = 1, neg_inf = 2 } kind = nan;
};

// Local, no MPI: the first non-finite element of this rank's shard, or false.
//   data  (range.b_count, range.h_count, rows.size(), D) elements of dtype,
//         as InputFile::read_shard writes it (rows in `rows` order)
// rows are the global token positions of the local rows
// (Partition::positions(rank)); range.b0 / range.h0 place the block.
// "First" is in the dataset's row-major order [b, h, n, d].
bool find_first_nonfinite(const void* data, DType dtype, const BatchHeadRange& range,
                          const Positions& rows, std::int64_t D, NonfiniteElement& first);

// Collective over comm: every rank calls it after the same read_shard, with
// the buffer, range and rows it passed there (a rank with an empty range or
// no rows passes them too; data may then be null). Returns on every rank
// when no rank's shard holds a NaN or Inf; otherwise every rank throws the
// same Error(input):
//   input file '<file>', dataset '<dataset>': has NaN at [b, h, n, d] (the
//   first non-finite element; pass --allow-nonfinite to accept) [...]
// where [b, h, n, d] is the first bad element over all ranks' shards in
// row-major order. dtype is the type of `data` (f32 after a widening read,
// else the storage type). Success costs one small all-reduce.
//
// In the job, after each read_shard (when !cfg.allow_nonfinite):
//   check_finite_shard(comm, q.data(), info.dtype, qr, qp.positions(rank), D,
//                      cfg.input, info.q.name);
void check_finite_shard(MPI_Comm comm, const void* data, DType dtype, const BatchHeadRange& range,
                        const Positions& rows, std::int64_t D, const std::string& file,
                        const std::string& dataset);

// Collective over comm: the largest finite |x| over every rank's shard
// (NaN and Inf are the scan's business, not this one's). The job bounds the
// computation's fp32 sums with it. data as for check_finite_shard.
double max_abs_finite(MPI_Comm comm, const void* data, DType dtype, std::size_t n);

}  // namespace ringattn
