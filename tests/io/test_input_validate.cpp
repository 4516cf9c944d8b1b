// Every way an input file can be wrong ends in the same Error on every rank
// (class and text), naming the file and the dataset, and never in a hang:
// missing, not a regular file, locked by a writer, not HDF5, truncated, a
// missing dataset or a link to nothing, wrong rank, shapes that disagree,
// unsupported types, zero-length axes, too large a head dim, a filter this
// HDF5 lacks.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/input_file.hpp"
#include "io_test_util.hpp"

namespace ringattn::test {
namespace {

// The shape of the tests' files (a few shape errors use their own).
constexpr InputShape kShape{2, 4, 2, 40, 24, 8};

class InputValidate : public IoTest {
 protected:
  // Writes `specs` as bad.h5 on rank 0 and expects open() to fail everywhere.
  void expect_bad(const std::vector<DatasetSpec>& specs, ErrorClass cls,
                  std::vector<std::string> needles) {
    const std::string p = path("bad.h5");
    on_root([&] { write_h5(p, specs); });
    needles.push_back(p);
    expect_agreed_error(
        comm_, [&] { (void)InputFile::open(comm_, p); }, cls, needles);
  }
  InputShape s_ = kShape;
};

TEST_F(InputValidate, MissingFile) {
  const std::string p = path("nowhere.h5");
  expect_agreed_error(comm_, [&] { (void)InputFile::open(comm_, p); }, ErrorClass::io,
                      {p, "no such file"});
}

TEST_F(InputValidate, DirectoryIsNoFile) {
  expect_agreed_error(comm_, [&] { (void)InputFile::open(comm_, dir_); }, ErrorClass::io,
                      {dir_, "directory"});
}

// Refused by kind, never opened: the open of a FIFO would block.
TEST_F(InputValidate, FifoAndDeviceAreRefusedUnopened) {
  const std::string fifo = path("fifo.h5");
  on_root([&] { ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0); });
  expect_agreed_error(comm_, [&] { (void)InputFile::open(comm_, fifo); }, ErrorClass::io,
                      {fifo, "FIFO", "not a regular file"});
  expect_agreed_error(comm_, [&] { (void)InputFile::open(comm_, "/dev/zero"); }, ErrorClass::io,
                      {"/dev/zero", "character device"});
}

TEST_F(InputValidate, LockedByAWriter) {
  const std::string p = path("in.h5");
  int fd = -1;
  on_root([&] {
    write_h5(p, qkv_specs(s_, FileType::f32, false));
    fd = ::open(p.c_str(), O_RDWR);
    ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);  // what HDF5 holds for a writer
  });
  expect_agreed_error(comm_, [&] { (void)InputFile::open(comm_, p); }, ErrorClass::io,
                      {p, "locked by another process that has it open for writing"});
  on_root([&] { ::close(fd); });
}

TEST_F(InputValidate, NotHdf5) {
  const std::string p = path("text.h5");
  on_root([&] { write_bytes(p, "this is not an HDF5 file, just some text\n"); });
  expect_agreed_error(comm_, [&] { (void)InputFile::open(comm_, p); }, ErrorClass::input,
                      {p, "not an HDF5 file"});
}

TEST_F(InputValidate, TruncatedFile) {
  const std::string p = path("truncated.h5");
  on_root([&] {
    write_h5(p, qkv_specs(s_, FileType::f32, false));
    const std::string bytes = read_bytes(p);
    write_bytes(p, bytes.substr(0, bytes.size() / 2));
  });
  expect_agreed_error(comm_, [&] { (void)InputFile::open(comm_, p); }, ErrorClass::input,
                      {p, "truncated"});
}

TEST_F(InputValidate, MissingDataset) {
  auto specs = qkv_specs(s_, FileType::f32, false);
  specs.pop_back();  // no v
  expect_bad(specs, ErrorClass::input, {"dataset 'v'", "no such dataset", "k, q"});
}

TEST_F(InputValidate, CustomNamesMissing) {
  const std::string p = path("in.h5");
  on_root([&] { write_h5(p, qkv_specs(s_, FileType::f32, false)); });
  expect_agreed_error(comm_,
                      [&] {
                        (void)InputFile::open(comm_, p, {"q", "keys", "v"});
                      },
                      ErrorClass::input, {p, "dataset 'keys'", "no such dataset"});
  expect_agreed_error(comm_,
                      [&] {
                        (void)InputFile::open(comm_, p, {"q", "", "v"});
                      },
                      ErrorClass::usage, {p, "empty"});
}

// A soft or external link that points nowhere is a missing dataset (input),
// not a failed HDF5 call (io).
TEST_F(InputValidate, LinksThatResolveToNothing) {
  const std::string p = path("links.h5");
  on_root([&] {
    write_h5(p, qkv_specs(s_, FileType::f32, false));
    H5Handle f(RA_H5_CHECK(H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)), H5Kind::file);
    RA_H5_CHECK(H5Lcreate_soft("/nowhere", f.get(), "soft", H5P_DEFAULT, H5P_DEFAULT));
    RA_H5_CHECK(H5Lcreate_external("absent.h5", "/v", f.get(), "ext", H5P_DEFAULT, H5P_DEFAULT));
  });
  expect_agreed_error(
      comm_,
      [&] {
        (void)InputFile::open(comm_, p, {"q", "k", "soft"});
      },
      ErrorClass::input,
      {p, "dataset 'soft'", "no such dataset", "'/nowhere'", "resolves to nothing"});
  expect_agreed_error(comm_,
                      [&] {
                        (void)InputFile::open(comm_, p, {"q", "ext", "v"});
                      },
                      ErrorClass::input,
                      {p, "dataset 'ext'", "no such dataset", "absent.h5", "resolves to nothing"});
}

// HDF5 opens a linked file with MPI-IO under the name it builds itself,
// which h5_open_parallel cannot shorten: refused before MPI-IO sees it.
TEST_F(InputValidate, ALinkedFileTooLongForMpiIo) {
  const std::string name = std::string(kMpioPathLimit - dir_.size(), 'x') + ".h5";
  const std::string p = path("in.h5");
  on_root([&] {
    auto specs = qkv_specs(s_, FileType::f32, false);
    write_h5(path(name), {specs[2]});
    specs.pop_back();
    write_h5(p, specs);
    H5Handle f(RA_H5_CHECK(H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)), H5Kind::file);
    RA_H5_CHECK(H5Lcreate_external(name.c_str(), "/v", f.get(), "v", H5P_DEFAULT, H5P_DEFAULT));
  });
  expect_agreed_error(comm_, [&] { (void)InputFile::open(comm_, p); }, ErrorClass::input,
                      {p, "dataset 'v'", "(an external link)", "longer than the 200"});
}

TEST_F(InputValidate, GroupInsteadOfDataset) {
  const std::string p = path("group.h5");
  on_root([&] {
    write_h5(p, qkv_specs(s_, FileType::f32, false));
    H5Handle f(RA_H5_CHECK(H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)), H5Kind::file);
    H5Handle g(RA_H5_CHECK(H5Gcreate2(f.get(), "grp", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)),
               H5Kind::group);
  });
  expect_agreed_error(comm_,
                      [&] {
                        (void)InputFile::open(comm_, p, {"q", "k", "grp"});
                      },
                      ErrorClass::input, {p, "dataset 'grp'", "group"});
}

// A file whose q, k and v (of `shape`, f32, contiguous) one change spoils,
// and what the Error(input) says besides the file's name.
struct Spoiled {
  const char* name;
  InputShape shape;
  void (*spoil)(std::vector<DatasetSpec>&);
  std::vector<std::string> needles;
};

void PrintTo(const Spoiled& c, std::ostream* os) {
  *os << c.name;
}

std::vector<Spoiled> spoiled_files() {
  using Specs = std::vector<DatasetSpec>;
  return {
      {"WrongRank",
       kShape,
       [](Specs& s) {
         s[0].dims = {2, 4, 40};
       },
       {"dataset 'q'", "3 dimensions", "[2, 4, 40]"}},
      {"BatchMismatch", kShape, [](Specs& s) { s[1].dims[0] = 3; }, {"'q'", "'k'", "batch"}},
      {"HeadDimMismatch", kShape, [](Specs& s) { s[2].dims[3] = 16; }, {"'q'", "'v'", "head dim"}},
      {"KeyValueTokensMismatch",
       kShape,
       [](Specs& s) { s[2].dims[2] = 25; },
       {"'k'", "'v'", "tokens"}},
      {"KeyValueHeadsMismatch",
       kShape,
       [](Specs& s) { s[2].dims[1] = 4; },
       {"'k'", "'v'", "heads"}},
      {"QueryHeadsNotMultipleOfKeyHeads",
       {2, 3, 2, 40, 24, 8},
       [](Specs&) {},
       {"'q'", "'k'", "H_q % H_kv"}},
      {"IntegerType",
       kShape,
       [](Specs& s) { s[1].type = FileType::i32; },
       {"dataset 'k'", "integer"}},
      {"StringType",
       kShape,
       [](Specs& s) { s[0].type = FileType::str; },
       {"dataset 'q'", "string"}},
      {"Float64", kShape, [](Specs& s) { s[2].type = FileType::f64; }, {"dataset 'v'", "float64"}},
      {"BFloat16LikeType",
       kShape,
       [](Specs& s) {
         s[0].type = FileType::bf16;
         s[0].write_data = false;
       },
       {"dataset 'q'", "bfloat16"}},
      {"MixedTypes",
       kShape,
       [](Specs& s) { s[1].type = FileType::f16; },
       {"'q' (f32)", "'k' (f16)", "one element type"}},
      {"ZeroLengthAxis",
       kShape,
       [](Specs& s) {
         s[1].dims[2] = 0;
         s[2].dims[2] = 0;
       },
       {"dataset 'k'", "length 0", "N (tokens)"}},
      {"HeadDimTooLarge", {1, 1, 1, 4, 4, 300}, [](Specs&) {}, {"dataset 'q'", "300", "256"}},
      {"UnavailableFilter",
       kShape,
       [](Specs& s) { s[1].unknown_filter = true; },
       {"dataset 'k'", "32000", "cannot decode"}},
  };
}

class InputValidateSpoiled : public InputValidate, public ::testing::WithParamInterface<Spoiled> {};

TEST_P(InputValidateSpoiled, IsRefusedOnEveryRank) {
  const Spoiled& c = GetParam();
  auto specs = qkv_specs(c.shape, FileType::f32, false);
  c.spoil(specs);
  expect_bad(specs, ErrorClass::input, c.needles);
}

INSTANTIATE_TEST_SUITE_P(Files, InputValidateSpoiled, ::testing::ValuesIn(spoiled_files()),
                         [](const ::testing::TestParamInfo<Spoiled>& i) {
                           return std::string(i.param.name);
                         });

// The good file next to all the bad ones opens fine (and the checks above
// did not leave HDF5 or MPI in a state that breaks the next open).
TEST_F(InputValidate, ValidFileStillOpens) {
  const std::string p = path("good.h5");
  on_root([&] { write_h5(p, qkv_specs(s_, FileType::f16, true)); });
  InputFile in = InputFile::open(comm_, p);
  EXPECT_EQ(in.info().shape.tokens_kv, 24);
  EXPECT_EQ(in.info().dtype, DType::f16);
}

}  // namespace
}  // namespace ringattn::test
