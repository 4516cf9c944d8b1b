// What the io tests share: a per-test temporary directory, HDF5 files written
// with the plain C API (serially, on rank 0) whose every element any rank can
// recompute, and (from common/mpi_test_util.hpp) checks that an Error is the
// same on every rank.
//
//   io/h5_handle.hpp          H5Handle and RA_H5_CHECK for the test files' own HDF5 calls
//   core/error.hpp            Error, ErrorClass
//   common/mpi_test_util.hpp  expect_agreed_error, world_rank and the other MPI helpers
#pragma once

#include <gtest/gtest.h>
#include <hdf5.h>
#include <mpi.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "io/h5_handle.hpp"
#include "io/input_file.hpp"
#include "ring/partition.hpp"

#include "../common/mpi_test_util.hpp"

namespace ringattn::test {

// The value a test file holds at (tensor, b, h, token, d). Integers, so they
// are exact in every storage type: unique per element for f32 files (a wrong
// row, head or batch never matches by chance); a hash in [-1024, 1023] for
// f16 files (whole numbers up to 2048 are exact in f16).
double ref_value(DType stored, int tensor, std::int64_t b, std::int64_t h, std::int64_t t,
                 std::int64_t d);

// Element types the test files use, valid and not.
enum class FileType { f32, f16, f64, i32, str, bf16 };

struct DatasetSpec {
  std::string name;
  std::vector<hsize_t> dims;
  FileType type = FileType::f32;
  int tensor = 0;        // which ref_value series (0 q, 1 k, 2 v; 3 and up for others)
  bool chunked = false;  // chunked (with gzip level 4) rather than contiguous
  bool write_data = true;
  bool unknown_filter = false;  // add an optional filter this HDF5 lacks (id 32000)
};

struct InputShape {
  std::int64_t B = 2, Hq = 4, Hkv = 2, Nq = 1001, Nkv = 517, D = 8;
};

// q, k, v of `shape`, all of one type and layout.
std::vector<DatasetSpec> qkv_specs(const InputShape& shape, FileType type, bool chunked);

// The partitions of a dense (unpacked) sequence, which the shard reads and
// writes are checked under.
inline constexpr PartitionKind kDensePartitions[] = {PartitionKind::contiguous,
                                                     PartitionKind::zigzag, PartitionKind::striped};

// ref_value series of the backward's inputs (q, k, v are 0, 1, 2).
inline constexpr int kInputDoSeries = 3;
inline constexpr int kInputOSeries = 4;
inline constexpr int kInputLseSeries = 5;

// The ref_value series the test files give tensor t.
int series_of(InputTensor t);

// Reads tensor t's shard of the rows `part` gives `rank` and compares every
// element with ref_value at their global positions (reporting the first
// mismatch), and checks that the read was collective where shard_io.hpp
// says it is.
void check_read(InputFile& in, InputTensor t, const Partition& part, const BatchHeadRange& r,
                DType mem, int rank);

// The backward's inputs of `shape`: do [B, Hq, Nq, D], and with_forward o
// (like do) and lse [B, Hq, Nq] (the series at d = 0), all of `type`.
std::vector<DatasetSpec> backward_specs(const InputShape& shape, FileType type, bool chunked,
                                        bool with_forward);

// Writes an HDF5 file with the serial driver (call on one rank only). A 4-d
// or 3-d dataset gets its ref_value series (3-d: d = 0), others no data.
void write_h5(const std::string& path, const std::vector<DatasetSpec>& datasets);

std::string read_bytes(const std::string& path);
void write_bytes(const std::string& path, const std::string& bytes);
// Names in dir, sorted (no "." or "..").
std::vector<std::string> list_dir(const std::string& dir);

// Every io test: a fresh directory shared by all ranks, removed afterwards,
// and one verdict per test for all ranks.
class IoTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  // Runs fn on rank 0 only (a failure there is a test failure), then a barrier.
  void on_root(const std::function<void()>& fn);

  MPI_Comm comm_ = MPI_COMM_WORLD;
  int rank_ = 0;
  int size_ = 1;
  std::string dir_;
};

}  // namespace ringattn::test
