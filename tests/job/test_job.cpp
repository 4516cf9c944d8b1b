// End-to-end runs of the job layer under mpirun (1, 2, 3 ranks): an HDF5
// input written here with seeded values, run_job, and the output read back
// and compared with the float64 reference of the whole problem. Every
// partition, causal and not, f16 and chunked+gzip inputs, grouped-query and
// cross-attention, lse when asked; and bad inputs giving one agreed error
// with no output file left behind.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <mpi.h>

#include <filesystem>
#include <string>
#include <vector>

#include "../io/io_test_util.hpp"
#include "core/seeded_data.hpp"
#include "io/h5_handle.hpp"
#include "job/job.hpp"
#include "kernel/attention.hpp"
#include "kernel/reference.hpp"

namespace ringattn::test {
namespace {

struct Shape {
  std::int64_t B = 1, Hq = 2, Hkv = 2, Nq = 97, Nkv = 97, D = 16;
};

// Seeded tensor t of the input (0 q, 1 k, 2 v, 3 do) as stored, flattened.
std::vector<char> seeded_tensor(int t, std::int64_t n_elems, DType dt) {
  std::vector<char> out(static_cast<std::size_t>(n_elems) * dtype_size(dt));
  fill_seeded(out.data(), dt, static_cast<std::size_t>(n_elems),
              7000 + static_cast<std::uint64_t>(t), 0, t == 2 ? 1.0f : 2.0f);
  return out;
}

// Writes q, k, v of `s`, and with_do the upstream gradient `do` shaped like
// q (serially; call on one rank).
void write_seeded_input(const std::string& path, const Shape& s, DType dt, bool chunked_gzip,
                        bool with_do = false) {
  H5Handle file(RA_H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)),
                H5Kind::file);
  const std::int64_t heads[4] = {s.Hq, s.Hkv, s.Hkv, s.Hq}, n[4] = {s.Nq, s.Nkv, s.Nkv, s.Nq};
  const char* names[4] = {"q", "k", "v", "do"};
  H5Handle type = h5_float_type(dt);
  for (int t = 0; t < (with_do ? 4 : 3); ++t) {
    const hsize_t dims[4] = {hsize_t(s.B), hsize_t(heads[t]), hsize_t(n[t]), hsize_t(s.D)};
    H5Handle space(RA_H5_CHECK(H5Screate_simple(4, dims, nullptr)), H5Kind::dataspace);
    H5Handle dcpl(RA_H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)), H5Kind::plist);
    if (chunked_gzip) {
      const hsize_t chunk[4] = {1, 1, std::min<hsize_t>(dims[2], 40), dims[3]};
      RA_H5_CHECK(H5Pset_chunk(dcpl.get(), 4, chunk));
      RA_H5_CHECK(H5Pset_deflate(dcpl.get(), 4));
    }
    H5Handle ds(RA_H5_CHECK(H5Dcreate2(file.get(), names[t], type.get(), space.get(), H5P_DEFAULT,
                                       dcpl.get(), H5P_DEFAULT)),
                H5Kind::dataset);
    const auto data = seeded_tensor(t, s.B * heads[t] * n[t] * s.D, dt);
    RA_H5_CHECK(H5Dwrite(ds.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()));
  }
}

std::vector<float> read_f32(const std::string& path, const char* name) {
  H5Handle file(RA_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)), H5Kind::file);
  H5Handle ds(RA_H5_CHECK(H5Dopen2(file.get(), name, H5P_DEFAULT)), H5Kind::dataset);
  H5Handle space(RA_H5_CHECK(H5Dget_space(ds.get())), H5Kind::dataspace);
  std::vector<float> out(static_cast<std::size_t>(H5Sget_simple_extent_npoints(space.get())));
  RA_H5_CHECK(H5Dread(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()));
  return out;
}

// Adds a dense f32 dataset to an existing file (serially).
void write_f32(const std::string& path, const char* name, const std::vector<hsize_t>& dims,
               const std::vector<float>& data) {
  H5Handle file(RA_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)), H5Kind::file);
  H5Handle space(RA_H5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)),
                 H5Kind::dataspace);
  H5Handle ds(RA_H5_CHECK(H5Dcreate2(file.get(), name, H5T_NATIVE_FLOAT, space.get(), H5P_DEFAULT,
                                     H5P_DEFAULT, H5P_DEFAULT)),
              H5Kind::dataset);
  RA_H5_CHECK(H5Dwrite(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()));
}

bool has_dataset(const std::string& path, const char* name) {
  H5Handle file(RA_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)), H5Kind::file);
  return H5Lexists(file.get(), name, H5P_DEFAULT) > 0;
}

struct JobCase {
  std::string name;
  Shape shape;
  DType dtype = DType::f32;
  bool chunked_gzip = false;
  bool causal = false;
  std::optional<PartitionKind> partition;
  bool lse = true;
  OutDType o_dtype = OutDType::f32;
  std::int64_t kv_heads_per_chunk = 1;
};

class JobEndToEnd : public IoTest, public testing::WithParamInterface<JobCase> {};

TEST_P(JobEndToEnd, OutputMatchesFloat64Reference) {
  const JobCase c = GetParam();
  const std::string in = path("in.h5"), out = path("out.h5");
  on_root([&] { write_seeded_input(in, c.shape, c.dtype, c.chunked_gzip); });

  JobConfig cfg;
  cfg.input = in;
  cfg.output = out;
  cfg.causal = c.causal;
  cfg.partition = c.partition;
  cfg.lse = c.lse;
  cfg.o_dtype = c.o_dtype;
  cfg.threads = 1;
  cfg.kv_heads_per_chunk = c.kv_heads_per_chunk;
  cfg.progress_interval = 1e9;
  const JobReport report = run_job(comm_, cfg);
  EXPECT_EQ(report.ranks, size_);
  EXPECT_FALSE(report.documents.is_packed());
  EXPECT_EQ(report.partition, cfg.effective_partition(false));

  // Every rank checks the whole output against the float64 reference.
  const Shape& s = c.shape;
  const auto q = seeded_tensor(0, s.B * s.Hq * s.Nq * s.D, c.dtype);
  const auto k = seeded_tensor(1, s.B * s.Hkv * s.Nkv * s.D, c.dtype);
  const auto v = seeded_tensor(2, s.B * s.Hkv * s.Nkv * s.D, c.dtype);
  AttnParams p =
      AttnParams::dense(q.data(), k.data(), v.data(), c.dtype, s.B, s.Hq, s.Hkv, s.Nq, s.Nkv, s.D);
  p.causal = c.causal;
  std::vector<double> ref(static_cast<std::size_t>(s.B * s.Hq * s.Nq * s.D)),
      ref_lse(static_cast<std::size_t>(s.B * s.Hq * s.Nq));
  reference_attention(p, ref.data(), ref_lse.data());

  ASSERT_TRUE(std::filesystem::exists(out));
  const std::vector<float> o = read_f32(out, "o");
  ASSERT_EQ(o.size(), ref.size());
  const Comparison co = compare_to_reference(o.data(), ref.data(), std::ssize(o));
  // An f16 `o` is rounded to half precision: 2^-11 relative.
  const double tol = c.o_dtype == OutDType::input && c.dtype == DType::f16 ? 1e-3 : 1e-5;
  EXPECT_LE(co.rel_err, tol) << "worst o[" << co.worst << "] = " << co.worst_value << ", float64 "
                             << co.worst_ref;
  EXPECT_EQ(has_dataset(out, "lse"), c.lse);
  if (c.lse) {
    const std::vector<float> lse = read_f32(out, "lse");
    const Comparison cl = compare_to_reference(lse.data(), ref_lse.data(), std::ssize(lse));
    EXPECT_LE(cl.max_abs_err, 1e-5 * std::max(1.0, cl.scale))
        << "worst lse[" << cl.worst << "] = " << cl.worst_value << ", float64 " << cl.worst_ref;
  }
  // Nothing but the input and the output is left in the directory.
  EXPECT_EQ(list_dir(dir_), (std::vector<std::string>{"in.h5", "out.h5"}));
}

std::vector<JobCase> job_cases() {
  std::vector<JobCase> out;
  for (PartitionKind pk : kDensePartitions)
    for (bool causal : {false, true}) {
      JobCase c;
      c.name = std::string(partition_name(pk)) + (causal ? "_causal" : "_full");
      c.causal = causal;
      c.partition = pk;
      c.shape = {2, 2, 2, 101, 101, 16};
      out.push_back(c);
    }
  JobCase f16;
  f16.name = "f16_chunked_gzip_causal";
  f16.dtype = DType::f16;
  f16.chunked_gzip = true;
  f16.causal = true;
  out.push_back(f16);
  JobCase f16_out = f16;
  f16_out.name = "f16_output_in_input_type";
  f16_out.o_dtype = OutDType::input;
  out.push_back(f16_out);
  JobCase gqa;
  gqa.name = "gqa_4_to_1_two_heads_per_chunk";
  gqa.shape = {1, 8, 2, 64, 64, 32};
  gqa.causal = true;
  gqa.kv_heads_per_chunk = 2;
  out.push_back(gqa);
  JobCase cross;
  cross.name = "cross_attention";
  cross.shape = {1, 2, 1, 37, 150, 16};
  cross.lse = false;
  out.push_back(cross);
  return out;
}

INSTANTIATE_TEST_SUITE_P(Job, JobEndToEnd, testing::ValuesIn(job_cases()),
                         [](const testing::TestParamInfo<JobCase>& i) { return i.param.name; });

// --backward: dq, dk and dv against the float64 gradients of the whole
// problem (within 1e-4 of each tensor's scale, as the kernel's tests), o and
// lse written as the forward's, through every partition, GQA with two K/V
// heads per chunk, cross-attention, f16 inputs, and --reuse-forward.
struct BackwardCase {
  std::string name;
  Shape shape;
  DType dtype = DType::f32;
  bool causal = false;
  std::optional<PartitionKind> partition;
  std::int64_t kv_heads_per_chunk = 1;
  bool reuse_forward = false;
};

class JobBackward : public IoTest, public testing::WithParamInterface<BackwardCase> {};

TEST_P(JobBackward, GradientsMatchFloat64Reference) {
  const BackwardCase c = GetParam();
  const Shape& s = c.shape;
  const std::string in = path("in.h5"), out = path("out.h5");
  const auto q = seeded_tensor(0, s.B * s.Hq * s.Nq * s.D, c.dtype);
  const auto k = seeded_tensor(1, s.B * s.Hkv * s.Nkv * s.D, c.dtype);
  const auto v = seeded_tensor(2, s.B * s.Hkv * s.Nkv * s.D, c.dtype);
  const auto d_o_raw = seeded_tensor(3, s.B * s.Hq * s.Nq * s.D, c.dtype);
  std::vector<float> d_o(static_cast<std::size_t>(s.B * s.Hq * s.Nq * s.D));
  load_f32(d_o_raw.data(), c.dtype, d_o.data(), d_o.size());
  AttnParams p =
      AttnParams::dense(q.data(), k.data(), v.data(), c.dtype, s.B, s.Hq, s.Hkv, s.Nq, s.Nkv, s.D);
  p.causal = c.causal;
  on_root([&] {
    write_seeded_input(in, s, c.dtype, false, /*with_do=*/true);
    if (c.reuse_forward) {  // the forward's answers, as a forward run would have written them
      std::vector<float> o(d_o.size()), lse(static_cast<std::size_t>(s.B * s.Hq * s.Nq));
      attention_forward(p, o.data(), lse.data());
      const hsize_t B = hsize_t(s.B), H = hsize_t(s.Hq), N = hsize_t(s.Nq), D = hsize_t(s.D);
      write_f32(in, "o", {B, H, N, D}, o);
      write_f32(in, "lse", {B, H, N}, lse);
    }
  });

  JobConfig cfg;
  cfg.input = in;
  cfg.output = out;
  cfg.causal = c.causal;
  cfg.partition = c.partition;
  cfg.threads = 1;
  cfg.kv_heads_per_chunk = c.kv_heads_per_chunk;
  cfg.progress_interval = 1e9;
  cfg.backward = true;
  cfg.reuse_forward = c.reuse_forward;
  run_job(comm_, cfg);

  std::vector<double> dq(d_o.size()), dk(static_cast<std::size_t>(s.B * s.Hkv * s.Nkv * s.D)),
      dv(dk.size()), o_ref(d_o.size()), lse_ref(static_cast<std::size_t>(s.B * s.Hq * s.Nq));
  reference_attention_backward(p, d_o.data(), dq.data(), dk.data(), dv.data());
  reference_attention(p, o_ref.data(), lse_ref.data());
  const double floor = gradient_error_floor(p, d_o.data(), std::ssize(d_o));
  for (auto [name, ref] : {std::pair<const char*, const std::vector<double>*>{"dq", &dq},
                           {"dk", &dk},
                           {"dv", &dv},
                           {"o", &o_ref}}) {
    const std::vector<float> got = read_f32(out, name);
    ASSERT_EQ(got.size(), ref->size()) << name;
    const Comparison cmp = compare_to_reference(got.data(), ref->data(), std::ssize(got));
    EXPECT_LE(cmp.max_abs_err / std::max(cmp.scale, floor), 1e-4)
        << name << ": worst [" << cmp.worst << "] = " << cmp.worst_value << ", float64 "
        << cmp.worst_ref;
  }
  ASSERT_TRUE(has_dataset(out, "lse")) << "a backward run writes lse (verify needs it)";
  const std::vector<float> lse = read_f32(out, "lse");
  const Comparison cl = compare_to_reference(lse.data(), lse_ref.data(), std::ssize(lse));
  EXPECT_LE(cl.max_abs_err, 1e-5 * std::max(1.0, cl.scale));
  EXPECT_EQ(list_dir(dir_), (std::vector<std::string>{"in.h5", "out.h5"}));
}

std::vector<BackwardCase> backward_cases() {
  std::vector<BackwardCase> out;
  for (PartitionKind pk : kDensePartitions)
    for (bool causal : {false, true})
      out.push_back({std::string(partition_name(pk)) + (causal ? "_causal" : "_full"),
                     {2, 2, 1, 101, 101, 16},
                     DType::f32,
                     causal,
                     pk});
  out.push_back({"gqa_4_to_1_two_heads_per_chunk", {1, 8, 2, 64, 64, 32}, DType::f32, true, {}, 2});
  out.push_back({"cross_attention", {1, 2, 1, 37, 150, 16}, DType::f32, false, {}});
  out.push_back({"f16_causal", {1, 2, 2, 80, 80, 24}, DType::f16, true, {}});
  out.push_back({"reuse_forward", {1, 2, 1, 70, 70, 16}, DType::f32, true, {}, 1, true});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Job, JobBackward, testing::ValuesIn(backward_cases()),
                         [](const testing::TestParamInfo<BackwardCase>& i) {
                           return i.param.name;
                         });

class JobBadInput : public IoTest {
 protected:
  // Runs a job on `in` and expects one agreed error naming `needles`, and no
  // output (nor temporary file) left.
  void expect_failure(const std::string& in, ErrorClass cls,
                      const std::vector<std::string>& needles) {
    JobConfig cfg;
    cfg.input = in;
    cfg.output = path("out.h5");
    cfg.threads = 1;
    const auto before = list_dir(dir_);
    expect_agreed_error(
        comm_, [&] { run_job(comm_, cfg); }, cls, needles);
    EXPECT_EQ(list_dir(dir_), before) << "a failed run left files behind";
  }
};

TEST_F(JobBadInput, MissingDataset) {
  auto specs = qkv_specs({1, 2, 2, 16, 16, 8}, FileType::f32, false);
  specs.pop_back();
  on_root([&] { write_h5(path("in.h5"), specs); });
  expect_failure(path("in.h5"), ErrorClass::input, {"in.h5", "'v'"});
}

TEST_F(JobBadInput, WrongRank) {
  auto specs = qkv_specs({1, 2, 2, 16, 16, 8}, FileType::f32, false);
  specs[0].dims = {2, 16, 8};
  on_root([&] { write_h5(path("in.h5"), specs); });
  expect_failure(path("in.h5"), ErrorClass::input, {"in.h5", "'q'"});
}

TEST_F(JobBadInput, MismatchedHeadDim) {
  auto specs = qkv_specs({1, 2, 2, 16, 16, 8}, FileType::f32, false);
  specs[1].dims[3] = 4;
  on_root([&] { write_h5(path("in.h5"), specs); });
  expect_failure(path("in.h5"), ErrorClass::input, {"in.h5"});
}

TEST_F(JobBadInput, IntegerType) {
  on_root([&] { write_h5(path("in.h5"), qkv_specs({1, 2, 2, 16, 16, 8}, FileType::i32, false)); });
  expect_failure(path("in.h5"), ErrorClass::input, {"in.h5"});
}

TEST_F(JobBadInput, FewerTokensThanRanks) {
  if (size_ < 2) GTEST_SKIP() << "needs 2 or more ranks (1 token per rank is the minimum)";
  on_root([&] { write_seeded_input(path("in.h5"), {1, 1, 1, 1, 1, 8}, DType::f32, false); });
  expect_failure(path("in.h5"), ErrorClass::input, {"in.h5", "fewer than the"});
}

TEST_F(JobBadInput, ExistingOutputWithoutOverwriteIsUntouched) {
  on_root([&] {
    write_seeded_input(path("in.h5"), {1, 1, 1, 16, 16, 8}, DType::f32, false);
    write_bytes(path("out.h5"), "precious earlier result");
  });
  expect_failure(path("in.h5"), ErrorClass::usage, {"out.h5"});
  EXPECT_EQ(read_bytes(path("out.h5")), "precious earlier result");
}

// Ranks of an MPMD launch (mpirun -np 1 ringattn run ... --causal : -np 1
// ringattn run ...) hold different settings: refused before any file is
// opened, the lowest differing rank named against rank 0.
TEST_F(JobBadInput, RanksWithDifferentSettingsAreRefusedBeforeAnyWork) {
  if (size_ < 2) GTEST_SKIP() << "needs 2 or more ranks";
  on_root([&] { write_seeded_input(path("in.h5"), {1, 1, 1, 16, 16, 8}, DType::f32, false); });
  JobConfig cfg;
  cfg.input = path("in.h5");
  cfg.output = path("out.h5");
  cfg.threads = 1;
  if (rank_ == size_ - 1) cfg.causal = true;
  if (rank_ >= 1 && size_ >= 3) cfg.threads = rank_ + 1;  // also differs, and first in the table
  const std::string want = size_ >= 3 ? "run.threads is 1 on rank 0 but 2 on rank 1"
                                      : "attention.causal is false on rank 0 but true on rank 1";
  const auto before = list_dir(dir_);
  expect_agreed_error(comm_, [&] { run_job(comm_, cfg); }, ErrorClass::usage,
                      {"ranks were started with different settings: " + want});
  EXPECT_EQ(list_dir(dir_), before) << "a refused run left files behind";
}

TEST_F(JobBadInput, BackwardWithoutUpstreamGradient) {
  on_root([&] { write_seeded_input(path("in.h5"), {1, 1, 1, 16, 16, 8}, DType::f32, false); });
  JobConfig cfg;
  cfg.input = path("in.h5");
  cfg.output = path("out.h5");
  cfg.threads = 1;
  cfg.backward = true;
  const auto before = list_dir(dir_);
  expect_agreed_error(comm_, [&] { run_job(comm_, cfg); }, ErrorClass::input, {"in.h5", "'do'"});
  EXPECT_EQ(list_dir(dir_), before) << "a refused run left files behind";
}

TEST_F(JobBadInput, ReuseForwardNeedsBackward) {
  JobConfig cfg;
  cfg.input = path("in.h5");
  cfg.output = path("out.h5");
  cfg.reuse_forward = true;
  expect_agreed_error(comm_, [&] { run_job(comm_, cfg); }, ErrorClass::usage,
                      {"--reuse-forward", "--backward"});
}

TEST_F(JobBadInput, SameSettingsOnEveryRankAgree) {
  JobConfig cfg;
  cfg.input = "in.h5";
  cfg.output = "out.h5";
  EXPECT_NO_THROW(agree_settings(comm_, cfg));
}

}  // namespace
}  // namespace ringattn::test
