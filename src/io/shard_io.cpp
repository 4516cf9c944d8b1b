// Hyperslab selections of a rank's rows and the collective transfer (see
// shard_io.hpp).
#include "io/shard_io.hpp"

#include <algorithm>
#include <array>
#include <cstring>
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

namespace {

// HDF5's dataset transfer property list, collective or independent.
H5Handle transfer_plist(bool collective) {
  H5Handle dxpl(RA_H5_CHECK(H5Pcreate(H5P_DATASET_XFER)), H5Kind::plist);
  RA_H5_CHECK(
      H5Pset_dxpl_mpio(dxpl.get(), collective ? H5FD_MPIO_COLLECTIVE : H5FD_MPIO_INDEPENDENT));
  return dxpl;
}

IoModeReport io_mode_of(hid_t dxpl) {
  IoModeReport rep;
  RA_H5_CHECK(H5Pget_mpio_actual_io_mode(dxpl, &rep.mode));
  RA_H5_CHECK(H5Pget_mpio_no_collective_cause(dxpl, &rep.local_cause, &rep.global_cause));
  return rep;
}

void h5_transfer(Transfer dir, hid_t dset, hid_t mem_type, hid_t mem_space, hid_t file_space,
                 hid_t dxpl, void* buf) {
  if (dir == Transfer::read)
    RA_H5_CHECK(H5Dread(dset, mem_type, mem_space, file_space, dxpl, buf));
  else
    RA_H5_CHECK(H5Dwrite(dset, mem_type, mem_space, file_space, dxpl, buf));
}

// The whole selection in one call, against a flat memory space: what
// contiguous datasets take (HDF5 walks both selections as byte runs), and
// the fallback for strided writes into chunked ones.
IoModeReport transfer_flat(Transfer dir, hid_t dset, hid_t mem_type, const Positions& rows,
                           const BatchHeadRange& r, void* buf, bool collective) {
  H5Handle file_space(RA_H5_CHECK(H5Dget_space(dset)), H5Kind::dataspace);
  select_rows(file_space.get(), rows, r);
  const hssize_t n = RA_H5_CHECK(H5Sget_select_npoints(file_space.get()));
  // The buffer is dense in the order HDF5 visits the file selection, so a
  // flat memory space of the same element count describes it.
  const hsize_t mem_dim = n > 0 ? hsize_t(n) : 1;
  H5Handle mem_space(RA_H5_CHECK(H5Screate_simple(1, &mem_dim, nullptr)), H5Kind::dataspace);
  if (n == 0) RA_H5_CHECK(H5Sselect_none(mem_space.get()));
  const H5Handle dxpl = transfer_plist(collective);
  h5_transfer(dir, dset, mem_type, mem_space.get(), file_space.get(), dxpl.get(), buf);
  return io_mode_of(dxpl.get());
}

// Chunked datasets, one call per run of rows: the memory space has the
// shape of the rank's block, (b_count, h_count, rows, D), and each call
// selects the same (b_count, h_count, run, D) block in file and memory.
// HDF5 maps a chunk's piece of such a pair with one offset; against a flat
// memory space it maps the chunk element by element, 10-50x slower. Every
// rank makes `calls` calls (the most any rank has), padding with empty
// selections, since collective calls must pair up.
IoModeReport transfer_runs(Transfer dir, hid_t dset, hid_t mem_type, const Positions& rows,
                           const BatchHeadRange& r, void* buf, bool collective, int calls) {
  H5Handle file_space(RA_H5_CHECK(H5Dget_space(dset)), H5Kind::dataspace);
  const int rank = RA_H5_CHECK(H5Sget_simple_extent_ndims(file_space.get()));
  std::array<hsize_t, kMaxRank> dims{};
  RA_H5_CHECK(H5Sget_simple_extent_dims(file_space.get(), dims.data(), nullptr));
  const hsize_t D = rank == kMaxRank ? dims[3] : 1;
  const std::array<hsize_t, kMaxRank> mem_dims{std::max<hsize_t>(hsize_t(r.b_count), 1),
                                               std::max<hsize_t>(hsize_t(r.h_count), 1),
                                               std::max<hsize_t>(hsize_t(rows.size()), 1), D};
  H5Handle mem_space(RA_H5_CHECK(H5Screate_simple(rank, mem_dims.data(), nullptr)),
                     H5Kind::dataspace);
  const H5Handle dxpl = transfer_plist(collective);
  const auto& segs = rows.segments();
  const bool empty = r.b_count == 0 || r.h_count == 0;
  hsize_t offset = 0;  // the run's first row in memory
  IoModeReport rep;
  for (int i = 0; i < calls; ++i) {
    RA_H5_CHECK(H5Sselect_none(file_space.get()));
    RA_H5_CHECK(H5Sselect_none(mem_space.get()));
    if (!empty && i < static_cast<int>(segs.size())) {
      const PositionSegment& s = segs[static_cast<std::size_t>(i)];
      const std::array<hsize_t, kMaxRank> count{hsize_t(r.b_count), hsize_t(r.h_count),
                                                hsize_t(s.count), D};
      const std::array<hsize_t, kMaxRank> at_file{hsize_t(r.b0), hsize_t(r.h0), hsize_t(s.first),
                                                  0};
      const std::array<hsize_t, kMaxRank> at_mem{0, 0, offset, 0};
      RA_H5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, at_file.data(), nullptr,
                                      count.data(), nullptr));
      RA_H5_CHECK(H5Sselect_hyperslab(mem_space.get(), H5S_SELECT_SET, at_mem.data(), nullptr,
                                      count.data(), nullptr));
      offset += hsize_t(s.count);
    }
    h5_transfer(dir, dset, mem_type, mem_space.get(), file_space.get(), dxpl.get(), buf);
    // The report of a call that moved this rank's rows, if one did.
    if (i == 0 || i < static_cast<int>(segs.size())) rep = io_mode_of(dxpl.get());
  }
  return rep;
}

// Strided rows (striped) from a chunked dataset: each run of stride-1 rows
// per call would be one call per row, so read whole windows of `window`
// rows (a chunk's token extent, aligned to the chunks: each chunk is
// decoded once) of one (batch, head) plane and keep the rank's rows. Reads
// P times the rank's bytes, all from chunks the ranks read anyway.
// Independent: the ranks' windows overlap, and Open MPI 4.1's OMPIO returns
// wrong bytes for collective reads whose requests overlap without being equal.
IoModeReport read_windows(hid_t dset, hid_t mem_type, const Positions& rows,
                          const BatchHeadRange& r, void* buf, std::int64_t window) {
  H5Handle file_space(RA_H5_CHECK(H5Dget_space(dset)), H5Kind::dataspace);
  const int rank = RA_H5_CHECK(H5Sget_simple_extent_ndims(file_space.get()));
  std::array<hsize_t, kMaxRank> dims{};
  RA_H5_CHECK(H5Sget_simple_extent_dims(file_space.get(), dims.data(), nullptr));
  const hsize_t D = rank == kMaxRank ? dims[3] : 1;
  const std::int64_t N = static_cast<std::int64_t>(dims[2]);
  const std::size_t row_bytes = H5Tget_size(mem_type) * D;
  const std::array<hsize_t, kMaxRank> mem_dims{1, 1, hsize_t(window), D};
  H5Handle mem_space(RA_H5_CHECK(H5Screate_simple(rank, mem_dims.data(), nullptr)),
                     H5Kind::dataspace);
  std::vector<unsigned char> tmp(static_cast<std::size_t>(window) * row_bytes);
  const H5Handle dxpl = transfer_plist(false);
  IoModeReport rep;
  rep.local_cause = rep.global_cause = H5D_MPIO_SET_INDEPENDENT;
  if (r.b_count == 0 || r.h_count == 0 || rows.size() == 0) return rep;

  const std::int64_t n_rows = rows.size();
  auto* out = static_cast<unsigned char*>(buf);
  for (std::int64_t b = 0; b < r.b_count; ++b)
    for (std::int64_t h = 0; h < r.h_count; ++h) {
      unsigned char* plane =
          out + static_cast<std::size_t>((b * r.h_count + h) * n_rows) * row_bytes;
      std::int64_t i = 0;  // the next local row to fill
      while (i < n_rows) {
        const std::int64_t w0 = rows[i] / window * window, w1 = std::min(N, w0 + window);
        const std::array<hsize_t, kMaxRank> at{hsize_t(r.b0 + b), hsize_t(r.h0 + h), hsize_t(w0),
                                               0};
        const std::array<hsize_t, kMaxRank> count{1, 1, hsize_t(w1 - w0), D};
        const std::array<hsize_t, kMaxRank> at_mem{0, 0, 0, 0};
        RA_H5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, at.data(), nullptr,
                                        count.data(), nullptr));
        RA_H5_CHECK(H5Sselect_hyperslab(mem_space.get(), H5S_SELECT_SET, at_mem.data(), nullptr,
                                        count.data(), nullptr));
        h5_transfer(Transfer::read, dset, mem_type, mem_space.get(), file_space.get(), dxpl.get(),
                    tmp.data());
        for (; i < n_rows && rows[i] < w1; ++i)
          std::memcpy(plane + static_cast<std::size_t>(i) * row_bytes,
                      tmp.data() + static_cast<std::size_t>(rows[i] - w0) * row_bytes, row_bytes);
      }
    }
  return io_mode_of(dxpl.get());
}

// Every rank's rows, gathered, when the ranks together hold each of the
// dataset's N rows exactly once over one (batch, head) block: a partition.
// Then the rows can move as contiguous ranges and be exchanged in memory.
struct RowOwners {
  std::vector<Positions> rows;  // rank -> its rows
  bool partition = false;
};

RowOwners gather_row_owners(MPI_Comm comm, const Positions& mine, const BatchHeadRange& r,
                            std::int64_t N) {
  int P = 1;
  RA_MPI_CHECK(MPI_Comm_size(comm, &P));
  std::vector<std::int64_t> packed{r.b0, r.b_count, r.h0, r.h_count};
  for (const PositionSegment& seg : mine.segments())
    packed.insert(packed.end(), {seg.first, seg.stride, seg.count});
  int n = static_cast<int>(packed.size());
  std::vector<int> counts(static_cast<std::size_t>(P)), displs(static_cast<std::size_t>(P));
  RA_MPI_CHECK(MPI_Allgather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, comm));
  for (int q = 1; q < P; ++q)
    displs[static_cast<std::size_t>(q)] =
        displs[static_cast<std::size_t>(q - 1)] + counts[static_cast<std::size_t>(q - 1)];
  std::vector<std::int64_t> all(static_cast<std::size_t>(displs.back() + counts.back()));
  RA_MPI_CHECK(MPI_Allgatherv(packed.data(), n, MPI_INT64_T, all.data(), counts.data(),
                              displs.data(), MPI_INT64_T, comm));
  RowOwners o;
  o.partition = r.b_count > 0 && r.h_count > 0;
  std::vector<std::uint8_t> held(o.partition ? static_cast<std::size_t>(N) : 0);
  for (int q = 0; q < P; ++q) {
    const std::int64_t* at = all.data() + displs[static_cast<std::size_t>(q)];
    o.partition =
        o.partition && at[0] == r.b0 && at[1] == r.b_count && at[2] == r.h0 && at[3] == r.h_count;
    Positions rows;
    for (int i = 4; i + 2 < counts[static_cast<std::size_t>(q)]; i += 3) {
      rows.append({at[i], at[i + 1], at[i + 2]});
      for (std::int64_t k = 0; o.partition && k < at[i + 2]; ++k) {
        const std::int64_t t = at[i] + k * at[i + 1];
        o.partition = t >= 0 && t < N && held[static_cast<std::size_t>(t)]++ == 0;
      }
    }
    o.rows.push_back(std::move(rows));
  }
  o.partition =
      o.partition && std::all_of(held.begin(), held.end(), [](std::uint8_t h) { return h == 1; });
  return o;
}

// The rows each rank moves to or from the file: an even split of [0, N).
std::int64_t range_begin(std::int64_t N, int P, int q) {
  return N * q / P;
}

// The first row of `rows` at a position >= t (rows increase).
std::int64_t first_row_at(const Positions& rows, std::int64_t t) {
  std::int64_t lo = 0, hi = rows.size();
  while (lo < hi) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    if (rows[mid] < t)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// The exchange's scratch, kept from call to call: a job moves a plane range
// per dataset per chunk, and fresh pages each time (the kernel zeroes them
// on first touch) cost more than the exchange itself. It grows to the
// largest range asked for, what shard_redistribution_bytes reports. One
// thread moves shards (HDF5 calls are serial), so one buffer serves.
std::vector<unsigned char>& exchange_scratch(std::size_t bytes) {
  static std::vector<unsigned char> scratch;
  if (scratch.size() < bytes) {
    scratch = {};
    scratch.resize(bytes);
  }
  return scratch;
}

// A partition's rows (striped: every P-th) moved as each rank's contiguous
// range of rows, one (batch, head) plane at a time, and exchanged with
// MPI_Alltoallv: the file sees P large contiguous requests per plane
// instead of N single-row pieces, and memory holds two plane ranges extra
// (shard_redistribution_bytes). Rows sent to a rank arrive grouped by
// sender, whose ranges increase, so they land in the rank's row order.
IoModeReport transfer_redistributed(MPI_Comm comm, Transfer dir, hid_t dset, hid_t mem_type,
                                    const RowOwners& owners, const BatchHeadRange& r, void* buf,
                                    std::int64_t N, std::size_t row_bytes) {
  int P = 1, me = 0;
  RA_MPI_CHECK(MPI_Comm_size(comm, &P));
  RA_MPI_CHECK(MPI_Comm_rank(comm, &me));
  const auto Pz = static_cast<std::size_t>(P);
  const Positions& mine = owners.rows[static_cast<std::size_t>(me)];
  const std::int64_t lo = range_begin(N, P, me), hi = range_begin(N, P, me + 1);
  // their_first/count[d]: rank d's rows in my range, [first, first + count)
  // of its rows; our_count[q]: how many of my rows lie in q's range (they
  // follow each other in my order).
  std::vector<std::int64_t> their_first(Pz);
  std::vector<int> their_count(Pz), our_count(Pz), their_displ(Pz), our_displ(Pz);
  for (int q = 0; q < P; ++q) {
    const auto qz = static_cast<std::size_t>(q);
    const Positions& d_rows = owners.rows[qz];
    their_first[qz] = first_row_at(d_rows, lo);
    their_count[qz] = static_cast<int>(first_row_at(d_rows, hi) - their_first[qz]);
    our_count[qz] = static_cast<int>(first_row_at(mine, range_begin(N, P, q + 1)) -
                                     first_row_at(mine, range_begin(N, P, q)));
    if (q > 0) {
      their_displ[qz] = their_displ[qz - 1] + their_count[qz - 1];
      our_displ[qz] = our_displ[qz - 1] + our_count[qz - 1];
    }
  }
  MPI_Datatype row_type = MPI_DATATYPE_NULL;
  RA_MPI_CHECK(MPI_Type_contiguous(static_cast<int>(row_bytes), MPI_BYTE, &row_type));
  RA_MPI_CHECK(MPI_Type_commit(&row_type));
  const std::size_t range_bytes = std::max<std::int64_t>(hi - lo, 1) * row_bytes;
  std::vector<unsigned char>& scratch = exchange_scratch(2 * range_bytes);
  unsigned char* range = scratch.data();
  unsigned char* exchanged = range + range_bytes;
  const Positions range_pos = Positions::contiguous(lo, hi - lo);
  IoModeReport rep;
  try {
    auto* local = static_cast<unsigned char*>(buf);
    for (std::int64_t b = 0; b < r.b_count; ++b)
      for (std::int64_t h = 0; h < r.h_count; ++h) {
        const BatchHeadRange plane_range{r.b0 + b, 1, r.h0 + h, 1};
        unsigned char* plane =
            local + static_cast<std::size_t>((b * r.h_count + h) * mine.size()) * row_bytes;
        // exchanged: the rows of my range grouped by the rank that holds them.
        auto for_each_held = [&](auto&& move_row) {
          std::size_t k = 0;
          for (int q = 0; q < P; ++q) {
            const Positions& d_rows = owners.rows[static_cast<std::size_t>(q)];
            for (std::int64_t i = 0; i < their_count[static_cast<std::size_t>(q)]; ++i, ++k)
              move_row(exchanged + k * row_bytes,
                       range + static_cast<std::size_t>(
                                   d_rows[their_first[static_cast<std::size_t>(q)] + i] - lo) *
                                   row_bytes);
          }
        };
        if (dir == Transfer::read) {
          rep = transfer_shard(comm, dir, dset, mem_type, range_pos, plane_range, range);
          for_each_held(
              [&](unsigned char* x, const unsigned char* f) { std::memcpy(x, f, row_bytes); });
          RA_MPI_CHECK(MPI_Alltoallv(exchanged, their_count.data(), their_displ.data(), row_type,
                                     plane, our_count.data(), our_displ.data(), row_type, comm));
        } else {
          RA_MPI_CHECK(MPI_Alltoallv(plane, our_count.data(), our_displ.data(), row_type, exchanged,
                                     their_count.data(), their_displ.data(), row_type, comm));
          for_each_held(
              [&](const unsigned char* x, unsigned char* f) { std::memcpy(f, x, row_bytes); });
          rep = transfer_shard(comm, dir, dset, mem_type, range_pos, plane_range, range);
        }
      }
  } catch (...) {
    MPI_Type_free(&row_type);
    throw;
  }
  RA_MPI_CHECK(MPI_Type_free(&row_type));
  return rep;
}

}  // namespace

std::int64_t shard_redistribution_bytes(std::int64_t N, int ranks, std::int64_t row_bytes) {
  if (ranks <= 1) return 0;
  return 2 * ((N + ranks - 1) / ranks) * row_bytes;
}

IoModeReport transfer_shard(MPI_Comm comm, Transfer dir, hid_t dset, hid_t mem_type,
                            const Positions& rows, const BatchHeadRange& r, void* buf,
                            bool collective) {
  // HDF5 wants a buffer address even for an empty selection.
  float dummy = 0.0f;
  if (buf == nullptr) buf = &dummy;

  // Every rank takes the same path: agreed here.
  int strided_anywhere = 0;
  for (const PositionSegment& s : rows.segments()) strided_anywhere |= s.stride != 1 && s.count > 1;
  RA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &strided_anywhere, 1, MPI_INT, MPI_MAX, comm));
  H5Handle space(RA_H5_CHECK(H5Dget_space(dset)), H5Kind::dataspace);
  const int ndims = RA_H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  if (strided_anywhere && collective) {
    std::array<hsize_t, kMaxRank> dims{};
    RA_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
    const auto N = static_cast<std::int64_t>(dims[2]);
    const RowOwners owners = gather_row_owners(comm, rows, r, N);
    if (owners.partition)
      return transfer_redistributed(comm, dir, dset, mem_type, owners, r, buf, N,
                                    H5Tget_size(mem_type) * (ndims == kMaxRank ? dims[3] : 1));
  }

  H5Handle dcpl(RA_H5_CHECK(H5Dget_create_plist(dset)), H5Kind::plist);
  const H5Storage st = h5_storage(dcpl.get(), ndims);
  if (st.layout != "chunked") return transfer_flat(dir, dset, mem_type, rows, r, buf, collective);

  // Every rank makes as many calls: agreed here.
  int most = static_cast<int>(rows.segments().size());
  RA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &most, 1, MPI_INT, MPI_MAX, comm));
  if (!strided_anywhere) return transfer_runs(dir, dset, mem_type, rows, r, buf, collective, most);
  if (dir == Transfer::read) return read_windows(dset, mem_type, rows, r, buf, st.chunk[2]);
  return transfer_flat(dir, dset, mem_type, rows, r, buf, collective);
}

}  // namespace ringattn
