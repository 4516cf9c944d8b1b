// Shard reads of the input: every partition kind at uneven N (1001 tokens of
// q, 517 of k/v on 1, 2 or 3 ranks) and at N barely above the rank count
// (empty zigzag chunks), f32 and f16 storage, contiguous and chunked+gzip,
// (batch, head) sub-blocks, ranks with nothing to read, argument errors that
// only one rank makes, and that HDF5 really did collective I/O; names up to
// the filesystem's limit in paths longer than MPI-IO takes as is; and szip
// chunks that szip left unfiltered, read independently.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <sstream>

#include "core/aligned_buffer.hpp"
#include "io/input_file.hpp"
#include "io_test_util.hpp"

namespace ringattn::test {
namespace {

struct ReadCase {
  FileType type;
  bool chunked;
};

std::ostream& operator<<(std::ostream& os, const ReadCase& c) {
  return os << (c.type == FileType::f16 ? "f16" : "f32")
            << (c.chunked ? "_chunked_gzip" : "_contiguous");
}

class InputRead : public IoTest, public ::testing::WithParamInterface<ReadCase> {};

TEST_P(InputRead, EveryPartitionReadsTheRanksOwnRows) {
  const ReadCase c = GetParam();
  const InputShape s;  // B 2, Hq 4, Hkv 2, Nq 1001, Nkv 517, D 8
  on_root([&] { write_h5(path("in.h5"), qkv_specs(s, c.type, c.chunked)); });
  InputFile in = InputFile::open(comm_, path("in.h5"));
  const InputInfo& info = in.info();
  EXPECT_EQ(info.shape.batch, s.B);
  EXPECT_EQ(info.shape.heads_q, s.Hq);
  EXPECT_EQ(info.shape.heads_kv, s.Hkv);
  EXPECT_EQ(info.shape.tokens_q, s.Nq);
  EXPECT_EQ(info.shape.tokens_kv, s.Nkv);
  EXPECT_EQ(info.shape.head_dim, s.D);
  EXPECT_EQ(info.dtype, c.type == FileType::f16 ? DType::f16 : DType::f32);

  for (PartitionKind kind : kDensePartitions) {
    const Partition pq(kind, s.Nq, size_), pkv(kind, s.Nkv, size_);
    check_read(in, InputTensor::q, pq, {0, s.B, 0, s.Hq}, DType::f32, rank_);
    check_read(in, InputTensor::k, pkv, {0, s.B, 0, s.Hkv}, DType::f32, rank_);
    check_read(in, InputTensor::v, pkv, {0, s.B, 0, s.Hkv}, DType::f32, rank_);
    // One batch, a head group in the middle: what a streaming job reads.
    check_read(in, InputTensor::q, pq, {1, 1, 1, 2}, DType::f32, rank_);
    check_read(in, InputTensor::v, pkv, {1, 1, 1, 1}, DType::f32, rank_);
    if (info.dtype == DType::f16)
      check_read(in, InputTensor::k, pkv, {0, s.B, 0, s.Hkv}, DType::f16, rank_);
  }
  in.close();
}

INSTANTIATE_TEST_SUITE_P(Storage, InputRead,
                         ::testing::Values(ReadCase{FileType::f32, false},
                                           ReadCase{FileType::f32, true},
                                           ReadCase{FileType::f16, false},
                                           ReadCase{FileType::f16, true}),
                         ::testing::PrintToStringParamName());

using InputReadEdge = IoTest;

// N just above the rank count: zigzag leaves some chunks empty, so a rank
// holds one run instead of two, and striped ranks hold one or two rows.
TEST_F(InputReadEdge, ShortSequencesWithEmptyZigzagChunks) {
  InputShape s;
  s.B = 1;
  s.Hq = 2;
  s.Hkv = 1;
  // N between P and 2P - 1: some of zigzag's 2P chunks are empty (N >= P is
  // the partitions' minimum).
  s.Nq = size_ + 1;
  s.Nkv = size_;
  s.D = 4;
  on_root([&] { write_h5(path("in.h5"), qkv_specs(s, FileType::f32, false)); });
  InputFile in = InputFile::open(comm_, path("in.h5"));
  for (PartitionKind kind : kDensePartitions) {
    check_read(in, InputTensor::q, Partition(kind, s.Nq, size_), {0, 1, 0, 2}, DType::f32, rank_);
    check_read(in, InputTensor::k, Partition(kind, s.Nkv, size_), {0, 1, 0, 1}, DType::f32, rank_);
  }
}

// A rank with nothing to read still joins the collective read.
TEST_F(InputReadEdge, RankWithEmptyBlockStillTakesPart) {
  const InputShape s;
  on_root([&] { write_h5(path("in.h5"), qkv_specs(s, FileType::f32, true)); });
  InputFile in = InputFile::open(comm_, path("in.h5"));
  for (PartitionKind kind : kDensePartitions) {
    const Partition pq(kind, s.Nq, size_);
    const BatchHeadRange r = rank_ == 0 ? BatchHeadRange{0, 0, 0, 0} : BatchHeadRange{0, 2, 1, 3};
    check_read(in, InputTensor::q, pq, r, DType::f32, rank_);
  }
}

// Bad arguments, on every rank or on one: every rank throws the same usage Error.
TEST_F(InputReadEdge, BadArgumentsAreAgreed) {
  const InputShape s;
  on_root([&] { write_h5(path("in.h5"), qkv_specs(s, FileType::f32, false)); });
  InputFile in = InputFile::open(comm_, path("in.h5"));
  AlignedBuffer<float> buf(static_cast<std::size_t>(s.B * s.Hq * s.Nq * s.D));
  const BatchHeadRange all{0, s.B, 0, s.Hq};

  expect_agreed_error(comm_,
                      [&] {
                        in.read_shard(InputTensor::q,
                                      Partition(PartitionKind::contiguous, s.Nkv, size_), all,
                                      DType::f32, buf.data());
                      },
                      ErrorClass::usage, {"in.h5", "'q'", "tokens"});
  expect_agreed_error(comm_,
                      [&] {
                        in.read_shard(InputTensor::q,
                                      Partition(PartitionKind::contiguous, s.Nq, size_ + 1), all,
                                      DType::f32, buf.data());
                      },
                      ErrorClass::usage, {"in.h5", "'q'", "ranks"});
  expect_agreed_error(comm_,
                      [&] {
                        in.read_shard(InputTensor::q, Partition(PartitionKind::zigzag, s.Nq, size_),
                                      all, DType::f16, buf.data());
                      },
                      ErrorClass::usage, {"in.h5", "'q'", "f16"});
  // Only the last rank asks for heads the dataset lacks.
  const BatchHeadRange mine =
      rank_ == size_ - 1 ? BatchHeadRange{0, 1, 0, s.Hkv + 1} : BatchHeadRange{0, 1, 0, 1};
  expect_agreed_error(comm_,
                      [&] {
                        in.read_shard(InputTensor::k,
                                      Partition(PartitionKind::striped, s.Nkv, size_), mine,
                                      DType::f32, buf.data());
                      },
                      ErrorClass::usage, {"in.h5", "'k'", "heads"});

  // The file still works after agreed errors.
  check_read(in, InputTensor::v, Partition(PartitionKind::zigzag, s.Nkv, size_), {0, s.B, 0, s.Hkv},
             DType::f32, rank_);
}

TEST_F(InputReadEdge, InspectDescribesLayoutAndFilters) {
  InputShape s;
  s.Nq = 300;
  s.Nkv = 300;
  on_root([&] {
    auto specs = qkv_specs(s, FileType::f16, true);
    specs[0].name = "query";
    specs[1].name = "key";
    specs[2].name = "value";
    specs[2].chunked = false;
    write_h5(path("named.h5"), specs);
  });
  const InputInfo info = inspect_input(comm_, path("named.h5"), {"query", "key", "value"});
  EXPECT_EQ(info.dtype, DType::f16);
  EXPECT_EQ(info.q.name, "query");
  EXPECT_EQ(info.q.layout, "chunked");
  EXPECT_EQ(info.q.chunk, (std::vector<std::int64_t>{1, 1, 100, 8}));
  ASSERT_EQ(info.q.filters.size(), 1u);
  EXPECT_EQ(info.q.filters[0].name, "deflate");
  EXPECT_TRUE(info.q.filters[0].decodes);
  EXPECT_EQ(info.q.type.name, "f16");
  EXPECT_EQ(info.v.layout, "contiguous");
  EXPECT_TRUE(info.v.chunk.empty());
  EXPECT_TRUE(info.v.filters.empty());
  EXPECT_NE(info.file.path.find("named.h5"), std::string::npos);
  EXPECT_GT(info.file.size, 0);
}

// File names up to the filesystem's 255 bytes, in paths around and beyond
// the 200 bytes MPI-IO is handed as is (longer ones go through
// /proc/self/fd): the same reads, no crash in the MPI-IO layer.
TEST_F(InputReadEdge, LongNamesUpToTheFilesystemLimit) {
  InputShape s;
  s.B = 1;
  s.Nq = 40;
  s.Nkv = 24;
  const std::size_t at_limit = kMpioPathLimit - dir_.size() - 1;
  for (const std::size_t len : {at_limit, at_limit + 1, std::size_t{243}, std::size_t{255}}) {
    const std::string p = path(std::string(len - 3, 'n') + ".h5");
    on_root([&] { write_h5(p, qkv_specs(s, FileType::f32, true)); });
    InputFile in = InputFile::open(comm_, p);
    for (PartitionKind kind : kDensePartitions)
      check_read(in, InputTensor::k, Partition(kind, s.Nkv, size_), {0, s.B, 0, s.Hkv}, DType::f32,
                 rank_);
    in.close();
    on_root([&] { std::filesystem::remove(p); });
  }
}

// An input opened through /proc/self/fd (its path is long) still finds the
// file its external link names, beside it.
TEST_F(InputReadEdge, ExternalLinksOfALongPathInput) {
  InputShape s;
  s.B = 1;
  s.Nq = 40;
  s.Nkv = 24;
  const std::string p = path(std::string(kMpioPathLimit, 'n') + ".h5");
  on_root([&] {
    auto specs = qkv_specs(s, FileType::f32, false);
    write_h5(path("v.h5"), {specs[2]});
    specs.pop_back();
    write_h5(p, specs);
    H5Handle f(RA_H5_CHECK(H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)), H5Kind::file);
    RA_H5_CHECK(H5Lcreate_external("v.h5", "/v", f.get(), "v", H5P_DEFAULT, H5P_DEFAULT));
  });
  InputFile in = InputFile::open(comm_, p);
  ASSERT_EQ(in.info().linked.size(), 1u);
  for (PartitionKind kind : kDensePartitions)
    check_read(in, InputTensor::v, Partition(kind, s.Nkv, size_), {0, s.B, 0, s.Hkv}, DType::f32,
               rank_);
}

// Values no compressor can shrink, the same on every rank.
std::vector<float> noise(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(gen);
  return v;
}

// szip leaves a chunk it cannot shrink unfiltered (its filter mask says so);
// HDF5 1.10's collective read decodes it anyway and fails, so such datasets
// are read independently, and read right.
TEST_F(InputReadEdge, SzipChunksLeftUnfilteredAreReadRight) {
  unsigned config = 0;
  if (H5Zfilter_avail(H5Z_FILTER_SZIP) <= 0 || H5Zget_filter_info(H5Z_FILTER_SZIP, &config) < 0 ||
      !(config & H5Z_FILTER_CONFIG_ENCODE_ENABLED))
    GTEST_SKIP() << "this HDF5 has no szip encoder";
  const hsize_t dims[4] = {1, 2, 64, 16}, chunk[4] = {1, 1, 64, 16};
  const std::size_t n = 2 * 64 * 16;
  const std::string p = path("szip.h5");
  on_root([&] {
    H5Handle f(RA_H5_CHECK(H5Fcreate(p.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT)),
               H5Kind::file);
    H5Handle space(RA_H5_CHECK(H5Screate_simple(4, dims, nullptr)), H5Kind::dataspace);
    H5Handle dcpl(RA_H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)), H5Kind::plist);
    RA_H5_CHECK(H5Pset_chunk(dcpl.get(), 4, chunk));
    RA_H5_CHECK(H5Pset_szip(dcpl.get(), H5_SZIP_NN_OPTION_MASK, 8));
    for (unsigned t = 0; t < 3; ++t) {
      H5Handle d(RA_H5_CHECK(H5Dcreate2(f.get(), std::string(1, "qkv"[t]).c_str(), H5T_IEEE_F32LE,
                                        space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT)),
                 H5Kind::dataset);
      RA_H5_CHECK(
          H5Dwrite(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, noise(n, t).data()));
      unsigned mask = 0;
      RA_H5_CHECK(H5Dget_chunk_info(d.get(), space.get(), 0, nullptr, &mask, nullptr, nullptr));
      EXPECT_NE(mask, 0u) << "szip compressed the noise: this test no longer shows the case";
    }
  });
  InputFile in = InputFile::open(comm_, p);
  const Partition part(PartitionKind::zigzag, 64, size_);
  const Positions pos = part.positions(rank_);
  for (unsigned t = 0; t < 3; ++t) {
    const std::vector<float> want = noise(n, t);
    AlignedBuffer<float> got(in.shard_elements(part, {0, 1, 0, 2}));
    in.read_shard(static_cast<InputTensor>(t), part, {0, 1, 0, 2}, DType::f32, got.data());
    EXPECT_FALSE(in.last_io_mode().collective());
    std::size_t bad = 0;
    for (std::int64_t h = 0; h < 2; ++h)
      for (std::int64_t i = 0; i < pos.size(); ++i)
        for (std::int64_t d = 0; d < 16; ++d)
          bad += got[static_cast<std::size_t>((h * pos.size() + i) * 16 + d)] !=
                 want[static_cast<std::size_t>((h * 64 + pos[i]) * 16 + d)];
    EXPECT_EQ(bad, 0u) << "tensor " << t << " on rank " << rank_;
  }
}

}  // namespace
}  // namespace ringattn::test
