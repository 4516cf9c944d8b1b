// Test files and temporary directories for the io tests
// (see io_test_util.hpp).
#include "io_test_util.hpp"

#include <stdlib.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "core/aligned_buffer.hpp"

namespace ringattn::test {

double ref_value(DType stored, int tensor, std::int64_t b, std::int64_t h, std::int64_t t,
                 std::int64_t d) {
  if (stored == DType::f16)
    return static_cast<double>((b * 131 + h * 31 + t * 7 + d * 3 + tensor * 11) % 2048 - 1024);
  // Below 2^24 for every shape the tests use: exact in f32.
  return static_cast<double>(tensor * 2000000 + ((b * 16 + h) * 4096 + t) * 16 + d);
}

std::vector<DatasetSpec> backward_specs(const InputShape& s, FileType type, bool chunked,
                                        bool with_forward) {
  std::vector<DatasetSpec> out = {{"do",
                                   {hsize_t(s.B), hsize_t(s.Hq), hsize_t(s.Nq), hsize_t(s.D)},
                                   type,
                                   kInputDoSeries,
                                   chunked}};
  if (with_forward) {
    out.push_back({"o",
                   {hsize_t(s.B), hsize_t(s.Hq), hsize_t(s.Nq), hsize_t(s.D)},
                   type,
                   kInputOSeries,
                   chunked});
    out.push_back(
        {"lse", {hsize_t(s.B), hsize_t(s.Hq), hsize_t(s.Nq)}, type, kInputLseSeries, chunked});
  }
  return out;
}

std::vector<DatasetSpec> qkv_specs(const InputShape& s, FileType type, bool chunked) {
  const auto dims = [](std::int64_t b, std::int64_t h, std::int64_t n, std::int64_t d) {
    return std::vector<hsize_t>{hsize_t(b), hsize_t(h), hsize_t(n), hsize_t(d)};
  };
  return {
      {"q", dims(s.B, s.Hq, s.Nq, s.D), type, 0, chunked},
      {"k", dims(s.B, s.Hkv, s.Nkv, s.D), type, 1, chunked},
      {"v", dims(s.B, s.Hkv, s.Nkv, s.D), type, 2, chunked},
  };
}

namespace {

H5Handle file_type(FileType t) {
  switch (t) {
    case FileType::f32:
      return h5_float_type(DType::f32);
    case FileType::f16:
      return h5_float_type(DType::f16);
    case FileType::f64:
      return H5Handle(RA_H5_CHECK(H5Tcopy(H5T_IEEE_F64LE)), H5Kind::datatype);
    case FileType::i32:
      return H5Handle(RA_H5_CHECK(H5Tcopy(H5T_STD_I32LE)), H5Kind::datatype);
    case FileType::str: {
      H5Handle s(RA_H5_CHECK(H5Tcopy(H5T_C_S1)), H5Kind::datatype);
      RA_H5_CHECK(H5Tset_size(s.get(), 8));
      return s;
    }
    case FileType::bf16: {  // 1 sign, 8 exponent, 7 mantissa bits
      H5Handle s(RA_H5_CHECK(H5Tcopy(H5T_IEEE_F32LE)), H5Kind::datatype);
      RA_H5_CHECK(H5Tset_fields(s.get(), 15, 7, 8, 0, 7));
      RA_H5_CHECK(H5Tset_size(s.get(), 2));
      return s;
    }
  }
  return {};
}

}  // namespace

void write_h5(const std::string& path, const std::vector<DatasetSpec>& datasets) {
  H5Handle fapl(RA_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)), H5Kind::plist);
  RA_H5_CHECK(H5Pset_fapl_sec2(fapl.get()));
  H5Handle file(RA_H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get())),
                H5Kind::file);
  for (const DatasetSpec& s : datasets) {
    H5Handle type = file_type(s.type);
    H5Handle space(
        RA_H5_CHECK(H5Screate_simple(static_cast<int>(s.dims.size()), s.dims.data(), nullptr)),
        H5Kind::dataspace);
    H5Handle dcpl(RA_H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)), H5Kind::plist);
    bool empty = false;
    for (hsize_t d : s.dims) empty = empty || d == 0;
    if ((s.chunked || s.unknown_filter) && !empty) {
      std::vector<hsize_t> chunk(s.dims);
      if (chunk.size() >= 2)
        chunk[chunk.size() - 2] = std::min<hsize_t>(chunk[chunk.size() - 2], 100);
      for (std::size_t a = 0; a + 2 < chunk.size(); ++a) chunk[a] = 1;
      RA_H5_CHECK(H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()));
      if (s.chunked) RA_H5_CHECK(H5Pset_deflate(dcpl.get(), 4));
      if (s.unknown_filter)
        RA_H5_CHECK(H5Pset_filter(dcpl.get(), 32000, H5Z_FLAG_OPTIONAL, 0, nullptr));
    }
    H5Handle dset(RA_H5_CHECK(H5Dcreate2(file.get(), s.name.c_str(), type.get(), space.get(),
                                         H5P_DEFAULT, dcpl.get(), H5P_DEFAULT)),
                  H5Kind::dataset);
    const bool numeric = s.type != FileType::str;
    const bool planes = s.dims.size() == 4 || s.dims.size() == 3;
    if (!s.write_data || !numeric || !planes || empty) continue;
    // Values as doubles; HDF5 converts them to the file type (all exact).
    // A 3-d dataset ([B, H, N], lse) holds the series at d = 0.
    const DType series = s.type == FileType::f16 ? DType::f16 : DType::f32;
    const std::int64_t D = s.dims.size() == 4 ? std::int64_t(s.dims[3]) : 1;
    std::vector<double> values;
    values.reserve(s.dims[0] * s.dims[1] * s.dims[2] * D);
    for (std::int64_t b = 0; b < std::int64_t(s.dims[0]); ++b)
      for (std::int64_t h = 0; h < std::int64_t(s.dims[1]); ++h)
        for (std::int64_t t = 0; t < std::int64_t(s.dims[2]); ++t)
          for (std::int64_t d = 0; d < D; ++d)
            values.push_back(ref_value(series, s.tensor, b, h, t, d));
    RA_H5_CHECK(
        H5Dwrite(dset.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()));
  }
  file.close();
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

void IoTest::SetUp() {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  std::string dir;
  if (rank_ == 0) {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/ringattn-io-XXXXXX";
    if (::mkdtemp(templ.data()) != nullptr) dir = templ;
  }
  int len = static_cast<int>(dir.size());
  MPI_Bcast(&len, 1, MPI_INT, 0, comm_);
  dir.resize(static_cast<std::size_t>(len));
  MPI_Bcast(dir.data(), len, MPI_CHAR, 0, comm_);
  ASSERT_FALSE(dir.empty()) << "cannot create a temporary directory";
  dir_ = dir;
}

void IoTest::TearDown() {
  // One verdict per test: a failure on any rank fails the test on rank 0 too.
  int mine = HasFailure() ? 1 : 0, any = 0;
  MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, comm_);
  if (any && !mine) ADD_FAILURE() << "failed on another rank (see its [rank N] lines)";
  if (rank_ == 0 && !dir_.empty()) std::filesystem::remove_all(dir_);
  MPI_Barrier(comm_);
}

void IoTest::on_root(const std::function<void()>& fn) {
  if (rank_ == 0) {
    try {
      fn();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "on rank 0: " << e.what();
    }
  }
  MPI_Barrier(comm_);
}

int series_of(InputTensor t) {
  switch (t) {
    case InputTensor::d_o:
      return kInputDoSeries;
    case InputTensor::o:
      return kInputOSeries;
    case InputTensor::lse:
      return kInputLseSeries;
    default:
      return static_cast<int>(t);  // q, k, v: 0, 1, 2
  }
}

void check_read(InputFile& in, InputTensor t, const Partition& part, const BatchHeadRange& r,
                DType mem, int rank) {
  const InputInfo& info = in.info();
  const DType stored = info.dtype_of(t);
  const std::int64_t D = t == InputTensor::lse ? 1 : info.shape.head_dim;
  const std::size_t n = in.shard_elements(t, part, r);
  AlignedBuffer<float> buf(n + 1);  // f16 reads use the first half
  in.read_shard(t, part, r, mem, buf.data());

  const Positions pos = part.positions(rank);
  const std::int64_t rows = pos.size();
  ASSERT_EQ(n, static_cast<std::size_t>(r.b_count * r.h_count * rows * D));
  std::size_t bad = 0;
  std::ostringstream first;
  for (std::int64_t b = 0; b < r.b_count; ++b)
    for (std::int64_t h = 0; h < r.h_count; ++h)
      for (std::int64_t i = 0; i < rows; ++i)
        for (std::int64_t d = 0; d < D; ++d) {
          const std::size_t at = static_cast<std::size_t>(((b * r.h_count + h) * rows + i) * D + d);
          float got = 0.0f;
          if (mem == DType::f32) {
            got = buf[at];
          } else {
            std::uint16_t hbits = 0;
            std::memcpy(&hbits, reinterpret_cast<const char*>(buf.data()) + 2 * at, 2);
            got = f16_to_float(hbits);
          }
          const double want = ref_value(stored, series_of(t), r.b0 + b, r.h0 + h, pos[i], d);
          if (static_cast<double>(got) != want && bad++ == 0)
            first << "b " << r.b0 + b << " h " << r.h0 + h << " row " << i << " (token " << pos[i]
                  << ") d " << d << ": got " << got << ", want " << want;
        }
  EXPECT_EQ(bad, 0u) << info.dataset(t).name << " " << partition_name(part.kind()) << " N "
                     << part.tokens() << " on rank " << rank << ": " << bad
                     << " wrong elements, first " << first.str();
  // Striped rows move as each rank's contiguous range, exchanged between
  // the ranks, when every rank reads the same block (collective); a chunked
  // dataset's striped rows for blocks that differ are read window by
  // window, independently.
  std::array<std::int64_t, 4> lo{r.b0, r.b_count, r.h0, r.h_count}, hi = lo;
  MPI_Allreduce(MPI_IN_PLACE, lo.data(), 4, MPI_INT64_T, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, hi.data(), 4, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  const bool windows = part.kind() == PartitionKind::striped && part.ranks() > 1 &&
                       info.dataset(t).layout == "chunked" && lo != hi;
  EXPECT_EQ(in.last_io_mode().collective(), !windows)
      << info.dataset(t).name << " " << partition_name(part.kind()) << " on rank " << rank
      << ": the read was " << in.last_io_mode().describe();
}

}  // namespace ringattn::test
