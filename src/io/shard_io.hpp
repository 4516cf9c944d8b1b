// One rank's shard of a [B, H, N] or [B, H, N, D] dataset, moved in a
// collective transfer: the selection both input reads and output writes use.
//
// A rank's rows are its global token positions (Partition::positions): one
// run (contiguous), two runs joined with H5S_SELECT_OR (zigzag) or one run
// with stride P (striped). HDF5 visits a selection in the dataset's row-major
// order, and positions always increase along a rank's rows, so the dense
// buffer comes out in the rank's local row order with no reordering.
//
// Includes: hdf5.h (hid_t, H5D_mpio_actual_io_mode_t), mpi.h (MPI_Comm),
// core/positions.hpp (Positions).
#pragma once

#include <hdf5.h>
#include <mpi.h>

#include <cstdint>
#include <string>

#include "core/positions.hpp"

namespace ringattn {

// A block of whole (batch, head) planes: the unit a job streams through.
struct BatchHeadRange {
  std::int64_t b0 = 0;       // first batch
  std::int64_t b_count = 0;  // batches [b0, b0 + b_count)
  std::int64_t h0 = 0;       // first head
  std::int64_t h_count = 0;  // heads [h0, h0 + h_count)
};

// What HDF5 did in a transfer: H5Pget_mpio_actual_io_mode and
// H5Pget_mpio_no_collective_cause, read back from the transfer property list.
struct IoModeReport {
  H5D_mpio_actual_io_mode_t mode = H5D_MPIO_NO_COLLECTIVE;
  std::uint32_t local_cause = 0;   // H5D_mpio_no_collective_cause_t bits, this rank
  std::uint32_t global_cause = 0;  // the same, or-ed over all ranks
  bool collective() const {
    return mode != H5D_MPIO_NO_COLLECTIVE && global_cause == H5D_MPIO_COLLECTIVE;
  }
  // "contiguous collective", "chunk collective", or "independent (datatype conversion, ...)".
  std::string describe() const;
};

// Throws Error(usage) unless `range` lies inside (B, H), every row lies in
// [0, N) and the positions increase along the rows (what transfer_shard
// relies on). `what` names the dataset for the message. Local: call it
// inside agree() before a collective transfer.
void check_shard(const std::string& what, std::int64_t B, std::int64_t H, std::int64_t N,
                 const Positions& rows, const BatchHeadRange& range);

enum class Transfer { read, write };

// H5Dread or H5Dwrite of the rank's rows, collective (H5FD_MPIO_COLLECTIVE)
// unless `collective` is false (then independent: see input_file.hpp for the
// one dataset kind that needs it). comm is the file's communicator: every
// rank of it calls this, also one with nothing to move (its selections are
// then empty). dset has shape (B, H, N) or (B, H, N, D); buf holds
// (b_count, h_count, rows.size()) or (b_count, h_count, rows.size(), D)
// elements of mem_type, dense. Arguments must have passed check_shard.
//
// Strided rows (striped) that partition the dataset's rows among the ranks
// over one block move as each rank's contiguous range of rows (an even
// split of N), one (batch, head) plane at a time, exchanged between the
// ranks with MPI_Alltoallv: the file sees large contiguous requests, not
// N / P single rows per rank. Otherwise contiguous datasets move in one
// call, and chunked ones one run of rows per call against a memory space
// shaped like the block (a flat one makes HDF5 map chunks element by
// element); strided rows from a chunked dataset that are not such a
// partition are read window by window, independently (see shard_io.cpp).
// The report is that of the last call.
IoModeReport transfer_shard(MPI_Comm comm, Transfer dir, hid_t dset, hid_t mem_type,
                            const Positions& rows, const BatchHeadRange& range, void* buf,
                            bool collective = true);

// The scratch transfer_shard allocates to exchange a partition's strided
// rows (two of the largest per-rank ranges of one plane), for a dataset of
// N rows of row_bytes each moved over `ranks` ranks; 0 on one rank.
std::int64_t shard_redistribution_bytes(std::int64_t N, int ranks, std::int64_t row_bytes);

}  // namespace ringattn
