// Hyperslab selections of a rank's rows and the collective transfer (see
// shard_io.hpp).
#include "io/shard_io.hpp"

#include <array>
#include <vector>

#include "core/error.hpp"
#include "io/h5_handle.hpp"

namespace ringattn {

namespace {

constexpr int kMaxRank = 4;

// Selects the rows of `rows` for the (batch, head) block in a dataspace of
// rank 3 (B, H, N) or 4 (B, H, N, D); selects nothing when there is nothing.
void select_rows(hid_t space, const Positions& rows, const BatchHeadRange& r) {
  const int rank = RA_H5_CHECK(H5Sget_simple_extent_ndims(space));
  RA_CHECK(rank == 3 || rank == kMaxRank, internal, "shard selection in a rank-", rank,
           " dataspace");
  std::array<hsize_t, kMaxRank> dims{};
  RA_H5_CHECK(H5Sget_simple_extent_dims(space, dims.data(), nullptr));

  RA_H5_CHECK(H5Sselect_none(space));
  if (r.b_count == 0 || r.h_count == 0) return;
  for (const PositionSegment& s : rows.segments()) {
    // Stride-1 runs as one block (the cheapest description for HDF5 and for
    // the MPI datatype it derives); strided runs as count blocks of one row.
    const bool run = s.stride == 1;
    std::array<hsize_t, kMaxRank> start{hsize_t(r.b0), hsize_t(r.h0), hsize_t(s.first), 0};
    std::array<hsize_t, kMaxRank> stride{1, 1, hsize_t(run ? 1 : s.stride), 1};
    std::array<hsize_t, kMaxRank> count{hsize_t(r.b_count), hsize_t(r.h_count),
                                        hsize_t(run ? 1 : s.count), 1};
    std::array<hsize_t, kMaxRank> block{1, 1, hsize_t(run ? s.count : 1), dims[3]};
    RA_H5_CHECK(H5Sselect_hyperslab(space, H5S_SELECT_OR, start.data(), stride.data(), count.data(),
                                    block.data()));
  }
}

}  // namespace

std::string IoModeReport::describe() const {
  std::string s;
  switch (mode) {
    case H5D_MPIO_NO_COLLECTIVE:
      s = "independent";
      break;
    case H5D_MPIO_CHUNK_INDEPENDENT:
      s = "chunk independent";
      break;
    case H5D_MPIO_CHUNK_COLLECTIVE:
      s = "chunk collective";
      break;
    case H5D_MPIO_CHUNK_MIXED:
      s = "chunk mixed";
      break;
    case H5D_MPIO_CONTIGUOUS_COLLECTIVE:
      s = "contiguous collective";
      break;
  }
  if (global_cause == H5D_MPIO_COLLECTIVE) return s;
  static const std::array<std::pair<std::uint32_t, const char*>, 8> kCauses{{
      {H5D_MPIO_SET_INDEPENDENT, "independent transfer requested"},
      {H5D_MPIO_DATATYPE_CONVERSION, "datatype conversion"},
      {H5D_MPIO_DATA_TRANSFORMS, "data transform"},
      {H5D_MPIO_MPI_OPT_TYPES_ENV_VAR_DISABLED, "MPI derived types disabled"},
      {H5D_MPIO_NOT_SIMPLE_OR_SCALAR_DATASPACES, "not a simple dataspace"},
      {H5D_MPIO_NOT_CONTIGUOUS_OR_CHUNKED_DATASET, "compact dataset"},
      {H5D_MPIO_PARALLEL_FILTERED_WRITES_DISABLED, "parallel filtered writes disabled"},
      {H5D_MPIO_ERROR_WHILE_CHECKING_COLLECTIVE_POSSIBLE, "error while checking"},
  }};
  std::string why;
  for (const auto& [bit, name] : kCauses)
    if (global_cause & bit) why += (why.empty() ? "" : ", ") + std::string(name);
  return s + " (" + why + ")";
}

void check_shard(const std::string& what, std::int64_t B, std::int64_t H, std::int64_t N,
                 const Positions& rows, const BatchHeadRange& r) {
  RA_CHECK(r.b0 >= 0 && r.b_count >= 0 && r.b0 + r.b_count <= B, usage, what, ": batches [", r.b0,
           ", ", r.b0 + r.b_count, ") outside the dataset's ", B);
  RA_CHECK(r.h0 >= 0 && r.h_count >= 0 && r.h0 + r.h_count <= H, usage, what, ": heads [", r.h0,
           ", ", r.h0 + r.h_count, ") outside the dataset's ", H);
  std::int64_t next = 0;  // the first position the next segment may use
  for (const PositionSegment& s : rows.segments()) {
    const std::int64_t last = s.first + (s.count - 1) * s.stride;
    RA_CHECK(s.first >= next && last < N, usage, what, ": token rows ", s.first, "..", last,
             " (stride ", s.stride, ") outside [", next, ", ", N, ") or not in increasing order");
    next = last + 1;
  }
}

IoModeReport transfer_shard(Transfer dir, hid_t dset, hid_t mem_type, const Positions& rows,
                            const BatchHeadRange& r, void* buf, bool collective) {
  H5Handle file_space(RA_H5_CHECK(H5Dget_space(dset)), H5Kind::dataspace);
  select_rows(file_space.get(), rows, r);
  const hssize_t n = RA_H5_CHECK(H5Sget_select_npoints(file_space.get()));

  // The buffer is dense in the order HDF5 visits the file selection, so a
  // flat memory space of the same element count describes it.
  const hsize_t mem_dim = n > 0 ? hsize_t(n) : 1;
  H5Handle mem_space(RA_H5_CHECK(H5Screate_simple(1, &mem_dim, nullptr)), H5Kind::dataspace);
  if (n == 0) RA_H5_CHECK(H5Sselect_none(mem_space.get()));

  // HDF5 wants a buffer address even for an empty selection.
  float dummy = 0.0f;
  if (buf == nullptr) buf = &dummy;

  H5Handle dxpl(RA_H5_CHECK(H5Pcreate(H5P_DATASET_XFER)), H5Kind::plist);
  RA_H5_CHECK(
      H5Pset_dxpl_mpio(dxpl.get(), collective ? H5FD_MPIO_COLLECTIVE : H5FD_MPIO_INDEPENDENT));
  if (dir == Transfer::read)
    RA_H5_CHECK(H5Dread(dset, mem_type, mem_space.get(), file_space.get(), dxpl.get(), buf));
  else
    RA_H5_CHECK(H5Dwrite(dset, mem_type, mem_space.get(), file_space.get(), dxpl.get(), buf));

  IoModeReport rep;
  RA_H5_CHECK(H5Pget_mpio_actual_io_mode(dxpl.get(), &rep.mode));
  RA_H5_CHECK(H5Pget_mpio_no_collective_cause(dxpl.get(), &rep.local_cause, &rep.global_cause));
  return rep;
}

}  // namespace ringattn
