// The output file: shard writes of o and lse under every partition kind
// read back exactly; attributes; the commit renames the temporary file into
// place and leaves nothing else; an existing target survives byte for byte
// unless overwrite is set; the input is never the output; a missing directory
// is an io error; and any failure between create and commit removes the
// temporary file and leaves the target alone. Targets that are not regular
// files, dangling symbolic links and names beyond the filesystem's limit
// are refused before anything is written; names up to that limit work.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include <filesystem>
#include <sstream>
#include <stdexcept>
#include <variant>

#include "core/aligned_buffer.hpp"
#include "io/output_file.hpp"
#include "io_test_util.hpp"

namespace ringattn::test {
namespace {

constexpr int kOSeries = 5;    // ref_value series of o
constexpr int kLseSeries = 6;  // ... and of lse (d = 0)

OutputSpec small_spec(const std::string& path) {
  OutputSpec s;
  s.path = path;
  s.B = 2;
  s.H = 3;
  s.N = 1001;
  s.D = 8;
  s.with_lse = true;
  return s;
}

// Writes this rank's rows of o and lse, one batch per call (as a job streams).
void write_all(OutputFile& out, const Partition& part, int rank, DType mem) {
  const OutputSpec& s = out.spec();
  const Positions pos = part.positions(rank);
  const std::int64_t rows = pos.size();
  for (std::int64_t b = 0; b < s.B; ++b) {
    AlignedBuffer<float> o(static_cast<std::size_t>(s.H * rows * s.D));  // (1, H, rows, D)
    AlignedBuffer<std::uint16_t> o16(o.size());
    AlignedBuffer<float> lse(static_cast<std::size_t>(s.H * rows));  // (1, H, rows)
    for (std::int64_t h = 0; h < s.H; ++h)
      for (std::int64_t i = 0; i < rows; ++i) {
        for (std::int64_t d = 0; d < s.D; ++d) {
          const auto at = static_cast<std::size_t>((h * rows + i) * s.D + d);
          o[at] = static_cast<float>(ref_value(s.o_dtype, kOSeries, b, h, pos[i], d));
          o16[at] = float_to_f16(o[at]);
        }
        lse[static_cast<std::size_t>(h * rows + i)] =
            static_cast<float>(ref_value(DType::f32, kLseSeries, b, h, pos[i], 0));
      }
    const BatchHeadRange r{b, 1, 0, s.H};
    if (mem == DType::f16)
      out.write_o(part, r, DType::f16, o16.data());
    else
      out.write_o(part, r, DType::f32, o.data());
    EXPECT_TRUE(out.last_io_mode().collective()) << "o write: " << out.last_io_mode().describe();
    if (s.with_lse) {
      out.write_lse(part, r, lse.data());
      EXPECT_TRUE(out.last_io_mode().collective())
          << "lse write: " << out.last_io_mode().describe();
    }
  }
}

std::string read_string_attr(hid_t file, const char* name) {
  H5Handle a(RA_H5_CHECK(H5Aopen(file, name, H5P_DEFAULT)), H5Kind::attribute);
  H5Handle t(RA_H5_CHECK(H5Aget_type(a.get())), H5Kind::datatype);
  EXPECT_TRUE(H5Tis_variable_str(t.get()) > 0) << name;
  char* s = nullptr;
  RA_H5_CHECK(H5Aread(a.get(), t.get(), &s));
  std::string out = s ? s : "";
  H5free_memory(s);
  return out;
}

template <class T>
T read_attr(hid_t file, const char* name, hid_t mem) {
  H5Handle a(RA_H5_CHECK(H5Aopen(file, name, H5P_DEFAULT)), H5Kind::attribute);
  T v{};
  RA_H5_CHECK(H5Aread(a.get(), mem, &v));
  return v;
}

// Serial read-back of a committed file on rank 0: every element of o and lse.
void check_file(const OutputSpec& s) {
  H5Handle f(RA_H5_CHECK(H5Fopen(s.path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)), H5Kind::file);
  H5Handle o(RA_H5_CHECK(H5Dopen2(f.get(), "o", H5P_DEFAULT)), H5Kind::dataset);
  H5Handle ot(RA_H5_CHECK(H5Dget_type(o.get())), H5Kind::datatype);
  EXPECT_EQ(H5Tget_size(ot.get()), dtype_size(s.o_dtype));
  std::vector<float> ov(static_cast<std::size_t>(s.B * s.H * s.N * s.D));
  RA_H5_CHECK(H5Dread(o.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, ov.data()));
  std::size_t bad = 0, at = 0;
  std::ostringstream first;
  for (std::int64_t b = 0; b < s.B; ++b)
    for (std::int64_t h = 0; h < s.H; ++h)
      for (std::int64_t t = 0; t < s.N; ++t)
        for (std::int64_t d = 0; d < s.D; ++d, ++at) {
          const double want = ref_value(s.o_dtype, kOSeries, b, h, t, d);
          if (static_cast<double>(ov[at]) != want && bad++ == 0)
            first << "o[" << b << ", " << h << ", " << t << ", " << d << "] = " << ov[at]
                  << ", want " << want;
        }
  EXPECT_EQ(bad, 0u) << first.str();

  if (s.with_lse) {
    H5Handle l(RA_H5_CHECK(H5Dopen2(f.get(), "lse", H5P_DEFAULT)), H5Kind::dataset);
    std::vector<float> lv(static_cast<std::size_t>(s.B * s.H * s.N));
    RA_H5_CHECK(H5Dread(l.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, lv.data()));
    bad = at = 0;
    for (std::int64_t b = 0; b < s.B; ++b)
      for (std::int64_t h = 0; h < s.H; ++h)
        for (std::int64_t t = 0; t < s.N; ++t, ++at)
          bad += static_cast<double>(lv[at]) != ref_value(DType::f32, kLseSeries, b, h, t, 0);
    EXPECT_EQ(bad, 0u) << "wrong lse elements";
  } else {
    EXPECT_EQ(H5Lexists(f.get(), "lse", H5P_DEFAULT), 0);
  }
  EXPECT_EQ(read_attr<std::int64_t>(f.get(), kCompleteAttribute, H5T_NATIVE_INT64), 1);
}

struct RoundTripCase {
  PartitionKind kind;
  DType o_dtype;
  DType mem;
};

class OutputRoundTrip : public IoTest, public ::testing::WithParamInterface<RoundTripCase> {};

TEST_P(OutputRoundTrip, WrittenShardsReadBackAndOnlyTheTargetRemains) {
  const RoundTripCase c = GetParam();
  OutputSpec spec = small_spec(path("out.h5"));
  spec.o_dtype = c.o_dtype;
  {
    OutputFile out = OutputFile::create(comm_, spec);
    // Before commit the data lives under the temporary name only, beside
    // the lock that keeps other runs off this output.
    on_root([&] {
      auto names = list_dir(dir_);
      std::sort(names.begin(), names.end());
      ASSERT_EQ(names.size(), 2u);
      EXPECT_EQ(names[0], ".out.h5.lock");
      EXPECT_EQ(names[1], ".out.h5.partial");
      EXPECT_EQ(out.temp_path(), path(names[1]));
    });
    write_all(out, Partition(c.kind, spec.N, size_), rank_, c.mem);
    out.set_attribute("config", std::string(R"({"causal": true, "partition": "zigzag"})"));
    out.set_attribute("ranks", std::int64_t{size_});
    out.set_attribute("scale", 0.125);
    out.set_attribute("version", std::string("draft"));
    out.set_attribute("version", std::string("0.1.0"));  // replaced, not duplicated
    // Ranks disagree on a value: rank 0's is written.
    out.set_attribute("rank_of_writer", std::int64_t{rank_});
    FileIdentity input;
    input.path = "/data/in.h5";
    input.size = 12345;
    input.inode = 77;
    out.set_attributes(identity_attributes(input));
    out.commit();
    EXPECT_TRUE(out.committed());
  }
  on_root([&] {
    EXPECT_EQ(list_dir(dir_), std::vector<std::string>{"out.h5"});
    check_file(spec);
    H5Handle f(RA_H5_CHECK(H5Fopen(spec.path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)), H5Kind::file);
    EXPECT_EQ(read_string_attr(f.get(), "config"), R"({"causal": true, "partition": "zigzag"})");
    EXPECT_EQ(read_string_attr(f.get(), "version"), "0.1.0");
    EXPECT_EQ(read_attr<std::int64_t>(f.get(), "ranks", H5T_NATIVE_INT64), size_);
    EXPECT_EQ(read_attr<double>(f.get(), "scale", H5T_NATIVE_DOUBLE), 0.125);
    EXPECT_EQ(read_attr<std::int64_t>(f.get(), "rank_of_writer", H5T_NATIVE_INT64), 0);
    EXPECT_EQ(read_string_attr(f.get(), "input_path"), "/data/in.h5");
    EXPECT_EQ(read_attr<std::int64_t>(f.get(), "input_size", H5T_NATIVE_INT64), 12345);
    EXPECT_EQ(read_attr<std::int64_t>(f.get(), "input_inode", H5T_NATIVE_INT64), 77);
  });
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, OutputRoundTrip,
    ::testing::Values(RoundTripCase{PartitionKind::contiguous, DType::f32, DType::f32},
                      RoundTripCase{PartitionKind::zigzag, DType::f32, DType::f32},
                      RoundTripCase{PartitionKind::striped, DType::f32, DType::f32},
                      RoundTripCase{PartitionKind::zigzag, DType::f16, DType::f32},
                      RoundTripCase{PartitionKind::striped, DType::f16, DType::f16}),
    [](const auto& p) {
      return std::string(partition_name(p.param.kind)) + "_" + dtype_name(p.param.o_dtype) +
             "_from_" + dtype_name(p.param.mem);
    });

using OutputCommit = IoTest;

TEST_F(OutputCommit, WithoutLse) {
  OutputSpec spec = small_spec(path("o_only.h5"));
  spec.with_lse = false;
  spec.N = 7;
  {
    OutputFile out = OutputFile::create(comm_, spec);
    write_all(out, Partition(PartitionKind::zigzag, spec.N, size_), rank_, DType::f32);
    const float x = 0.0f;
    expect_agreed_error(
        comm_,
        [&] {
          out.write_lse(Partition(PartitionKind::zigzag, spec.N, size_), {0, 0, 0, 0}, &x);
        },
        ErrorClass::usage, {"o_only.h5", "'lse'"});
    out.commit();
  }
  on_root([&] { check_file(spec); });
}

TEST_F(OutputCommit, ExistingTargetIsKeptWithoutOverwrite) {
  const std::string target = path("out.h5");
  on_root([&] { write_bytes(target, "an earlier result"); });
  expect_agreed_error(comm_, [&] { (void)OutputFile::create(comm_, small_spec(target)); },
                      ErrorClass::usage, {target, "exists", "overwrite"});
  on_root([&] {
    EXPECT_EQ(read_bytes(target), "an earlier result");
    EXPECT_EQ(list_dir(dir_), std::vector<std::string>{"out.h5"});
  });
}

TEST_F(OutputCommit, OverwriteReplacesTheTarget) {
  OutputSpec spec = small_spec(path("out.h5"));
  spec.overwrite = true;
  spec.N = 50;
  on_root([&] { write_bytes(spec.path, "an earlier result"); });
  {
    OutputFile out = OutputFile::create(comm_, spec);
    write_all(out, Partition(PartitionKind::contiguous, spec.N, size_), rank_, DType::f32);
    on_root([&] { EXPECT_EQ(read_bytes(spec.path), "an earlier result"); });  // until commit
    out.commit();
  }
  on_root([&] {
    EXPECT_EQ(list_dir(dir_), std::vector<std::string>{"out.h5"});
    check_file(spec);
  });
}

TEST_F(OutputCommit, MissingDirectory) {
  const std::string target = path("no/such/dir/out.h5");
  expect_agreed_error(comm_, [&] { (void)OutputFile::create(comm_, small_spec(target)); },
                      ErrorClass::io, {target, "does not exist"});
}

TEST_F(OutputCommit, OutputIsTheInput) {
  const std::string input = path("in.h5");
  on_root([&] {
    write_h5(input, qkv_specs({1, 1, 1, 4, 4, 4}, FileType::f32, false));
    ASSERT_EQ(::symlink(input.c_str(), path("link.h5").c_str()), 0);
  });
  const std::string before = rank_ == 0 ? read_bytes(input) : "";
  for (const std::string& target : {dir_ + "/./in.h5", path("link.h5")}) {
    OutputSpec spec = small_spec(target);
    spec.input_path = input;
    spec.overwrite = true;
    expect_agreed_error(comm_, [&] { (void)OutputFile::create(comm_, spec); }, ErrorClass::usage,
                        {target, "is the input"});
  }
  on_root([&] {
    EXPECT_EQ(read_bytes(input), before);
    EXPECT_EQ(list_dir(dir_), (std::vector<std::string>{"in.h5", "link.h5"}));
  });
}

TEST_F(OutputCommit, AgreedWriteErrorThenScopeExitLeavesNothing) {
  const OutputSpec spec = small_spec(path("out.h5"));
  {
    OutputFile out = OutputFile::create(comm_, spec);
    AlignedBuffer<float> o(16);
    // Only the last rank asks for a batch the file lacks: all ranks throw.
    const BatchHeadRange r = rank_ == size_ - 1 ? BatchHeadRange{2, 1, 0, 1} : BatchHeadRange{};
    expect_agreed_error(comm_,
                        [&] {
                          out.write_o(Partition(PartitionKind::zigzag, spec.N, size_), r,
                                      DType::f32, o.data());
                        },
                        ErrorClass::usage, {"out.h5", "'o'", "batches"});
  }  // not committed: the destructor aborts
  on_root([&] { EXPECT_TRUE(list_dir(dir_).empty()); });
}

TEST_F(OutputCommit, ExceptionBeforeCommitLeavesNothing) {
  const OutputSpec spec = small_spec(path("out.h5"));
  try {
    OutputFile out = OutputFile::create(comm_, spec);
    write_all(out, Partition(PartitionKind::striped, spec.N, size_), rank_, DType::f32);
    throw std::runtime_error("the ring failed");  // on every rank, as an agreed Error would
  } catch (const std::runtime_error&) {
  }
  on_root([&] { EXPECT_TRUE(list_dir(dir_).empty()); });

  // abort() by hand, then destruction: still nothing, no double removal.
  {
    OutputFile out = OutputFile::create(comm_, spec);
    out.abort();
    out.abort();
  }
  on_root([&] { EXPECT_TRUE(list_dir(dir_).empty()); });
}

TEST_F(OutputCommit, TargetThatAppearsBeforeCommitIsNotReplaced) {
  OutputSpec spec = small_spec(path("out.h5"));
  spec.N = 30;
  {
    OutputFile out = OutputFile::create(comm_, spec);
    write_all(out, Partition(PartitionKind::contiguous, spec.N, size_), rank_, DType::f32);
    on_root([&] { write_bytes(spec.path, "someone else's result"); });
    expect_agreed_error(comm_, [&] { out.commit(); }, ErrorClass::usage,
                        {spec.path, "appeared", "not replaced"});
    EXPECT_FALSE(out.committed());
  }
  on_root([&] {
    EXPECT_EQ(read_bytes(spec.path), "someone else's result");
    EXPECT_EQ(list_dir(dir_), std::vector<std::string>{"out.h5"});
  });
}

TEST_F(OutputCommit, BadShapeIsUsage) {
  OutputSpec spec = small_spec(path("out.h5"));
  spec.D = 0;
  expect_agreed_error(comm_, [&] { (void)OutputFile::create(comm_, spec); }, ErrorClass::usage,
                      {"out.h5", "shape"});
  spec = small_spec(path("out.h5"));
  spec.o_dtype = DType::bf16;
  expect_agreed_error(comm_, [&] { (void)OutputFile::create(comm_, spec); }, ErrorClass::usage,
                      {"out.h5", "bf16"});
  on_root([&] { EXPECT_TRUE(list_dir(dir_).empty()); });
}

// Names up to 255 bytes: the partial and lock names shorten themselves to
// fit, and a path beyond the 200 bytes MPI-IO takes as is goes through
// /proc/self/fd (h5_open_parallel). The result is the same file.
TEST_F(OutputCommit, LongNamesUpToTheFilesystemLimitCommit) {
  for (const std::size_t len : {std::size_t{230}, std::size_t{246}, std::size_t{255}}) {
    OutputSpec spec = small_spec(path(std::string(len - 3, 'o') + ".h5"));
    spec.N = 40;
    {
      OutputFile out = OutputFile::create(comm_, spec);
      on_root([&] {
        EXPECT_EQ(list_dir(dir_).size(), 2u);  // the partial and the lock
        for (const auto& name : list_dir(dir_)) EXPECT_LE(name.size(), 255u) << name;
      });
      write_all(out, Partition(PartitionKind::zigzag, spec.N, size_), rank_, DType::f32);
      out.commit();
    }
    on_root([&] {
      EXPECT_EQ(list_dir(dir_), std::vector<std::string>{std::string(len - 3, 'o') + ".h5"});
      check_file(spec);
      std::filesystem::remove(spec.path);
    });
  }
}

TEST_F(OutputCommit, ANameBeyondTheFilesystemLimitIsRefusedUpFront) {
  const std::string target = path(std::string(253, 'o') + ".h5");  // 256 bytes
  expect_agreed_error(comm_, [&] { (void)OutputFile::create(comm_, small_spec(target)); },
                      ErrorClass::usage, {"256 bytes", "255"});
  on_root([&] { EXPECT_TRUE(list_dir(dir_).empty()); });
}

// Found before any work, not at the rename after the whole computation.
TEST_F(OutputCommit, ADanglingSymlinkTargetIsRefusedUpFront) {
  const std::string target = path("out.h5");
  on_root([&] { ASSERT_EQ(::symlink("gone/out.h5", target.c_str()), 0); });
  expect_agreed_error(comm_, [&] { (void)OutputFile::create(comm_, small_spec(target)); },
                      ErrorClass::usage,
                      {target, "symbolic link", "gone/out.h5", "does not exist"});
  on_root([&] { EXPECT_EQ(list_dir(dir_), std::vector<std::string>{"out.h5"}); });
}

// A FIFO or a device is never replaced, with overwrite or without.
TEST_F(OutputCommit, ATargetThatIsNoRegularFileIsRefused) {
  const std::string fifo = path("out.h5");
  on_root([&] { ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0); });
  for (const std::string& target : {fifo, std::string("/dev/null")}) {
    OutputSpec spec = small_spec(target);
    spec.overwrite = true;
    expect_agreed_error(comm_, [&] { (void)OutputFile::create(comm_, spec); }, ErrorClass::usage,
                        {target, "not a regular file"});
  }
  on_root([&] {
    struct stat st {};
    ASSERT_EQ(::stat(fifo.c_str(), &st), 0);
    EXPECT_TRUE(S_ISFIFO(st.st_mode));
    EXPECT_EQ(list_dir(dir_), std::vector<std::string>{"out.h5"});
  });
}

// The one attribute type: arrays are written too, and read back as written.
TEST_F(OutputCommit, ArrayAttributesReadBackThroughTheDescription) {
  OutputSpec spec = small_spec(path("out.h5"));
  spec.N = 9;
  {
    OutputFile out = OutputFile::create(comm_, spec);
    write_all(out, Partition(PartitionKind::contiguous, spec.N, size_), rank_, DType::f32);
    out.set_attribute("ints", std::vector<std::int64_t>{7, -2, 5});
    out.set_attribute("reals", std::vector<double>{0.5, 1e300});
    out.set_attribute("none", std::vector<double>{});
    out.commit();
  }
  on_root([&] {
    const H5FileDesc d = describe_h5_file(spec.path, H5DescribeWhat{}, "file");
    EXPECT_EQ(std::get<std::vector<std::int64_t>>(d.attribute("ints")->value),
              (std::vector<std::int64_t>{7, -2, 5}));
    EXPECT_EQ(std::get<std::vector<double>>(d.attribute("reals")->value),
              (std::vector<double>{0.5, 1e300}));
    EXPECT_TRUE(d.attribute("none")->summary);
    EXPECT_EQ(std::get<std::int64_t>(d.attribute(kCompleteAttribute)->value), 1);
  });
}

}  // namespace
}  // namespace ringattn::test
