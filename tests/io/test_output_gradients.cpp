// The output of a backward run: dq [B, H, N, D] and dk, dv [B, H_kv, N_kv, D]
// in f32 beside o and lse, written under q's and K/V's partitions (grouped
// heads, cross-attention lengths), committed and read back exactly; gradient
// writes refused in a file without them; and resumes: a suspended partial
// file with gradients continues and commits every chunk, one without them
// is refused for a backward run and one with them for a forward run (both
// kept for the run that made them).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <utility>

#include "core/aligned_buffer.hpp"
#include "io/output_file.hpp"
#include "io_test_util.hpp"

namespace ringattn::test {
namespace {

// ref_value series of what is written (up to 7: f32 values below 2^24, exact).
constexpr int kO = 3, kLse = 4, kDq = 5, kDk = 6, kDv = 7;

OutputSpec gradient_spec(const std::string& path) {
  OutputSpec s;
  s.path = path;
  s.B = 2;
  s.H = 4;
  s.N = 1001;
  s.D = 8;
  s.H_kv = 2;
  s.N_kv = 517;
  s.with_lse = true;
  s.with_gradients = true;
  return s;
}

// (1, heads, rows, D) values of one batch of `series` at the rows' positions (D = 1: lse).
std::vector<float> block(int series, std::int64_t b, std::int64_t heads, const Positions& pos,
                         std::int64_t D) {
  std::vector<float> v;
  v.reserve(static_cast<std::size_t>(heads * pos.size() * D));
  for (std::int64_t h = 0; h < heads; ++h)
    for (std::int64_t i = 0; i < pos.size(); ++i)
      for (std::int64_t d = 0; d < D; ++d)
        v.push_back(static_cast<float>(ref_value(DType::f32, series, b, h, pos[i], d)));
  return v;
}

// Writes batch b of every dataset, as one chunk of a job would.
void write_batch(OutputFile& out, const Partition& qp, const Partition& kvp, std::int64_t b,
                 int rank) {
  const OutputSpec& s = out.spec();
  const Positions qpos = qp.positions(rank), kvpos = kvp.positions(rank);
  const BatchHeadRange qr{b, 1, 0, s.H}, kvr{b, 1, 0, s.H_kv};
  out.write_o(qp, qr, DType::f32, block(kO, b, s.H, qpos, s.D).data());
  out.write_lse(qp, qr, block(kLse, b, s.H, qpos, 1).data());
  out.write_dq(qp, qr, block(kDq, b, s.H, qpos, s.D).data());
  EXPECT_TRUE(out.last_io_mode().collective()) << "dq write: " << out.last_io_mode().describe();
  out.write_dk(kvp, kvr, block(kDk, b, s.H_kv, kvpos, s.D).data());
  EXPECT_TRUE(out.last_io_mode().collective()) << "dk write: " << out.last_io_mode().describe();
  out.write_dv(kvp, kvr, block(kDv, b, s.H_kv, kvpos, s.D).data());
  EXPECT_TRUE(out.last_io_mode().collective()) << "dv write: " << out.last_io_mode().describe();
}

// Rank 0, serially: dataset `name` has `dims`, f32 storage, and `series` everywhere.
void check_dataset(hid_t file, const char* name, const std::vector<hsize_t>& dims, int series) {
  H5Handle d(RA_H5_CHECK(H5Dopen2(file, name, H5P_DEFAULT)), H5Kind::dataset);
  H5Handle space(RA_H5_CHECK(H5Dget_space(d.get())), H5Kind::dataspace);
  std::vector<hsize_t> got(dims.size());
  ASSERT_EQ(H5Sget_simple_extent_ndims(space.get()), static_cast<int>(dims.size())) << name;
  H5Sget_simple_extent_dims(space.get(), got.data(), nullptr);
  EXPECT_EQ(got, dims) << name;
  H5Handle t(RA_H5_CHECK(H5Dget_type(d.get())), H5Kind::datatype);
  EXPECT_GT(H5Tequal(t.get(), H5T_IEEE_F32LE), 0) << name << " is not f32";
  const std::int64_t D = dims.size() == 4 ? std::int64_t(dims[3]) : 1;
  std::vector<float> v(static_cast<std::size_t>(dims[0] * dims[1] * dims[2] * D));
  RA_H5_CHECK(H5Dread(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()));
  std::size_t bad = 0, at = 0;
  std::ostringstream first;
  for (std::int64_t b = 0; b < std::int64_t(dims[0]); ++b)
    for (std::int64_t h = 0; h < std::int64_t(dims[1]); ++h)
      for (std::int64_t n = 0; n < std::int64_t(dims[2]); ++n)
        for (std::int64_t x = 0; x < D; ++x, ++at) {
          const double want = ref_value(DType::f32, series, b, h, n, x);
          if (static_cast<double>(v[at]) != want && bad++ == 0)
            first << name << "[" << b << ", " << h << ", " << n << ", " << x << "] = " << v[at]
                  << ", want " << want;
        }
  EXPECT_EQ(bad, 0u) << bad << " wrong elements, first " << first.str();
}

void check_gradient_file(const OutputSpec& s) {
  H5Handle f(RA_H5_CHECK(H5Fopen(s.path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)), H5Kind::file);
  const auto B = hsize_t(s.B), H = hsize_t(s.H), N = hsize_t(s.N), D = hsize_t(s.D);
  const auto HK = hsize_t(s.H_kv), NK = hsize_t(s.N_kv);
  check_dataset(f.get(), kODataset, {B, H, N, D}, kO);
  check_dataset(f.get(), kLseDataset, {B, H, N}, kLse);
  check_dataset(f.get(), kDqDataset, {B, H, N, D}, kDq);
  check_dataset(f.get(), kDkDataset, {B, HK, NK, D}, kDk);
  check_dataset(f.get(), kDvDataset, {B, HK, NK, D}, kDv);
  // Chunked like o: one (batch, head) plane by a run of tokens by D.
  H5Handle dk(RA_H5_CHECK(H5Dopen2(f.get(), kDkDataset, H5P_DEFAULT)), H5Kind::dataset);
  H5Handle dcpl(RA_H5_CHECK(H5Dget_create_plist(dk.get())), H5Kind::plist);
  hsize_t chunk[4] = {};
  ASSERT_EQ(H5Pget_chunk(dcpl.get(), 4, chunk), 4);
  EXPECT_EQ(chunk[0], 1u);
  EXPECT_EQ(chunk[1], 1u);
  EXPECT_EQ(chunk[2], NK);  // 517 rows of 32 bytes fit in one chunk
  EXPECT_EQ(chunk[3], D);
  H5Handle a(RA_H5_CHECK(H5Aopen(f.get(), kCompleteAttribute, H5P_DEFAULT)), H5Kind::attribute);
  std::int64_t complete = 0;
  RA_H5_CHECK(H5Aread(a.get(), H5T_NATIVE_INT64, &complete));
  EXPECT_EQ(complete, 1);
  for (const char* gone : {kResumeKeyAttribute, kChunksDoneAttribute})
    EXPECT_EQ(H5Aexists(f.get(), gone), 0) << gone;
}

struct GradientCase {
  PartitionKind q_kind, kv_kind;
};

class OutputGradients : public IoTest, public ::testing::WithParamInterface<GradientCase> {};

TEST_P(OutputGradients, WrittenShardsReadBackAndCommit) {
  const GradientCase c = GetParam();
  const OutputSpec spec = gradient_spec(path("grads.h5"));
  {
    OutputFile out = OutputFile::create(comm_, spec);
    const Partition qp(c.q_kind, spec.N, size_), kvp(c.kv_kind, spec.N_kv, size_);
    for (std::int64_t b = 0; b < spec.B; ++b) write_batch(out, qp, kvp, b, rank_);
    out.commit();
  }
  on_root([&] {
    EXPECT_EQ(list_dir(dir_), std::vector<std::string>{"grads.h5"});
    check_gradient_file(spec);
  });
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, OutputGradients,
    ::testing::Values(GradientCase{PartitionKind::contiguous, PartitionKind::contiguous},
                      GradientCase{PartitionKind::zigzag, PartitionKind::zigzag},
                      GradientCase{PartitionKind::striped, PartitionKind::contiguous}),
    [](const auto& p) {
      return std::string(partition_name(p.param.q_kind)) + "_" + partition_name(p.param.kv_kind);
    });

using OutputGradientsEdge = IoTest;

// Only a backward run's file has them; the same usage Error everywhere.
TEST_F(OutputGradientsEdge, NoGradientsWithoutAskingForThem) {
  OutputSpec spec = gradient_spec(path("fwd.h5"));
  spec.with_gradients = false;
  spec.N = 30;
  OutputFile out = OutputFile::create(comm_, spec);
  const Partition qp(PartitionKind::contiguous, spec.N, size_);
  const float x = 0.0f;
  for (const auto& write : {&OutputFile::write_dq, &OutputFile::write_dk, &OutputFile::write_dv})
    expect_agreed_error(comm_,
                        [&] {
                          (out.*write)(qp, {0, 0, 0, 0}, &x);
                        },
                        ErrorClass::usage, {"fwd.h5", "not in this file", "only with gradients"});
  out.abort();
  on_root([&] { EXPECT_TRUE(list_dir(dir_).empty()); });
}

// dk and dv take K/V's partition and heads, not q's.
TEST_F(OutputGradientsEdge, GradientArgumentsAreChecked) {
  OutputSpec spec = gradient_spec(path("grads.h5"));
  {
    OutputFile out = OutputFile::create(comm_, spec);
    const Partition qp(PartitionKind::zigzag, spec.N, size_);
    const Partition kvp(PartitionKind::zigzag, spec.N_kv, size_);
    std::vector<float> buf(static_cast<std::size_t>(spec.H * spec.N * spec.D));
    expect_agreed_error(comm_,
                        [&] {
                          out.write_dk(qp, {0, 1, 0, spec.H_kv}, buf.data());
                        },
                        ErrorClass::usage, {"'dk'", "partition of 1001 tokens", "N = 517"});
    expect_agreed_error(comm_,
                        [&] {
                          out.write_dv(kvp, {0, 1, 0, spec.H}, buf.data());
                        },
                        ErrorClass::usage, {"'dv'", "heads"});
    expect_agreed_error(comm_,
                        [&] {
                          out.write_dq(kvp, {0, 1, 0, spec.H}, buf.data());
                        },
                        ErrorClass::usage, {"'dq'", "N = 1001"});
  }
  on_root([&] { EXPECT_TRUE(list_dir(dir_).empty()); });
  spec.H_kv = 0;
  expect_agreed_error(comm_, [&] { (void)OutputFile::create(comm_, spec); }, ErrorClass::usage,
                      {"grads.h5", "gradient shape", "[2, 0, 517, 8]"});
}

// A suspended backward run continues: the first batch, written and
// recorded before the stop, survives, the second is written after the
// resume, and the commit holds both.
TEST_F(OutputGradientsEdge, ResumeWithGradients) {
  OutputSpec spec = gradient_spec(path("grads.h5"));
  spec.resume = true;
  spec.resume_key = R"({"backward": true})";
  spec.chunks = 2;
  const Partition qp(PartitionKind::zigzag, spec.N, size_);
  const Partition kvp(PartitionKind::zigzag, spec.N_kv, size_);
  {
    OutputFile out = OutputFile::create(comm_, spec);
    EXPECT_FALSE(out.resumed());
    write_batch(out, qp, kvp, 0, rank_);
    out.mark_chunks_done(1);
    out.suspend();
  }
  on_root([&] {
    EXPECT_EQ(list_dir(dir_), std::vector<std::string>{".grads.h5.partial"});
    const H5FileDesc d = describe_h5_file(partial_output_path(spec.path), H5DescribeWhat{}, "p");
    for (const char* n : {kDqDataset, kDkDataset, kDvDataset}) EXPECT_NE(d.dataset(n), nullptr);
  });
  {
    OutputFile out = OutputFile::create(comm_, spec);
    EXPECT_TRUE(out.resumed());
    EXPECT_EQ(out.chunks_done(), 1);
    write_batch(out, qp, kvp, 1, rank_);
    out.mark_chunks_done(2);
    out.commit();
  }
  on_root([&] {
    EXPECT_EQ(list_dir(dir_), std::vector<std::string>{"grads.h5"});
    check_gradient_file(spec);
  });
}

// The resume key normally tells a forward run's partial file from a
// backward run's; when it does not, the datasets still do, and the refused
// partial file stays for the run that made it.
TEST_F(OutputGradientsEdge, ResumeRefusesAPartialFileOfTheOtherKind) {
  OutputSpec fwd = gradient_spec(path("out.h5"));
  fwd.with_gradients = false;
  fwd.N = 60;
  fwd.N_kv = 50;
  fwd.resume = true;
  fwd.resume_key = R"({"same": 1})";
  OutputSpec bwd = fwd;
  bwd.with_gradients = true;
  for (const auto& [made, resumed] : {std::pair{fwd, bwd}, std::pair{bwd, fwd}}) {
    {
      OutputFile out = OutputFile::create(comm_, made);
      out.mark_chunks_done(0);
      out.suspend();
    }
    const std::string partial = partial_output_path(made.path);
    const std::string before = rank_ == 0 ? read_bytes(partial) : "";
    expect_agreed_error(
        comm_, [&] { (void)OutputFile::create(comm_, resumed); }, ErrorClass::input,
        made.with_gradients ? std::vector<std::string>{partial, "gradient dataset 'dq'",
                                                       "computes no gradients", "--overwrite"}
                            : std::vector<std::string>{partial, "no dataset 'dq'",
                                                       "computed no gradients", "--overwrite"});
    on_root([&] {
      EXPECT_EQ(list_dir(dir_), std::vector<std::string>{".out.h5.partial"});
      EXPECT_EQ(read_bytes(partial), before);
      std::remove(partial.c_str());
    });
  }
}

}  // namespace
}  // namespace ringattn::test
