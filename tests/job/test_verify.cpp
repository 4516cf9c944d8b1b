// `verify` on backward runs' outputs (job/verify.hpp): inputs with q, k, v
// and an upstream gradient, outputs whose o, lse, dq, dk and dv the library
// computed on the whole problem (attention_forward, attention_backward),
// written with the attributes `ringattn run --backward` writes. Verify
// passes them; one corrupted element of dq or dk fails the verdict naming
// that tensor and element; an output or input missing a piece is one
// Error(input). Causal GQA, cross-attention, windows, packed sequences, and
// sampled key rows. One process (MPI only because inspect_input takes a
// communicator), under mpirun at 1 rank.
//
//   io/h5_describe.hpp   write_root_attribute, the attributes as run writes them
//   io/h5_handle.hpp     H5Handle, RA_H5_CHECK for the test files' own calls
//   kernel/attention.hpp, kernel/backward.hpp  the gradients the files hold
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/documents.hpp"
#include "core/error.hpp"
#include "core/seeded_data.hpp"
#include "io/h5_describe.hpp"
#include "io/h5_handle.hpp"
#include "io/input_file.hpp"
#include "io/output_file.hpp"
#include "job/verify.hpp"
#include "kernel/attention.hpp"
#include "kernel/backward.hpp"

namespace ringattn {
namespace {

struct Case {
  std::string name;
  std::int64_t B = 1, H = 4, HK = 2, N = 40, NK = 40, D = 8;
  bool causal = false;
  Window window;
  std::vector<std::int64_t> cu;  // packed self-attention offsets (B = 1); empty: dense
};

// (Designated initializers of a struct with class members warn in GCC 12.)
Case shape(const std::string& name, std::int64_t B, std::int64_t H, std::int64_t HK, std::int64_t N,
           std::int64_t NK, std::int64_t D, bool causal) {
  Case c;
  c.name = name;
  c.B = B;
  c.H = H;
  c.HK = HK;
  c.N = N;
  c.NK = NK;
  c.D = D;
  c.causal = causal;
  return c;
}
Case windowed(Case c, Window w) {
  c.window = w;
  return c;
}
Case packed(Case c, std::vector<std::int64_t> cu) {
  c.cu = std::move(cu);
  return c;
}

// A problem and the library's answer to it, f32, dense (B, H, N, D) etc.
struct Problem {
  Case c;
  float scale = 0;
  std::vector<float> q, k, v, d_o;
  std::vector<float> o, lse, dq, dk, dv;
};

Problem solve(const Case& c) {
  Problem p;
  p.c = c;
  const auto nq = static_cast<std::size_t>(c.B * c.H * c.N * c.D),
             nkv = static_cast<std::size_t>(c.B * c.HK * c.NK * c.D);
  p.q.resize(nq);
  p.k.resize(nkv);
  p.v.resize(nkv);
  p.d_o.resize(nq);
  fill_seeded(p.q.data(), DType::f32, nq, 11);
  fill_seeded(p.k.data(), DType::f32, nkv, 12);
  fill_seeded(p.v.data(), DType::f32, nkv, 13);
  fill_seeded(p.d_o.data(), DType::f32, nq, 14);
  AttnParams a = AttnParams::dense(p.q.data(), p.k.data(), p.v.data(), DType::f32, c.B, c.H, c.HK,
                                   c.N, c.NK, c.D);
  a.causal = c.causal;
  // Packed documents mask on their coordinates, as the job and verify do.
  const Documents docs = c.cu.empty() ? Documents() : Documents::packed(c.cu, c.cu);
  a.window = docs.window(c.window);
  a.q_pos = docs.q_coordinates(Positions::contiguous(0, c.N));
  a.k_pos = docs.k_coordinates(Positions::contiguous(0, c.NK));
  a.threads = 2;
  p.scale = a.effective_scale();
  p.o.resize(nq);
  p.lse.resize(static_cast<std::size_t>(c.B * c.H * c.N));
  p.dq.resize(nq);
  p.dk.resize(nkv);
  p.dv.resize(nkv);
  attention_forward(a, p.o.data(), p.lse.data());
  attention_backward(a, {p.d_o.data(), p.o.data(), p.lse.data()}, p.dq.data(), p.dk.data(),
                     p.dv.data());
  return p;
}

void write_f32(hid_t file, const std::string& name, const std::vector<hsize_t>& dims,
               const std::vector<float>& data) {
  H5Handle space(RA_H5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)),
                 H5Kind::dataspace);
  H5Handle d(RA_H5_CHECK(H5Dcreate2(file, name.c_str(), H5T_IEEE_F32LE, space.get(), H5P_DEFAULT,
                                    H5P_DEFAULT, H5P_DEFAULT)),
             H5Kind::dataset);
  RA_H5_CHECK(H5Dwrite(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()));
}

H5Handle create(const std::string& path) {
  return {RA_H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)),
          H5Kind::file};
}

std::vector<hsize_t> dims(std::int64_t a, std::int64_t b, std::int64_t c, std::int64_t d) {
  return {static_cast<hsize_t>(a), static_cast<hsize_t>(b), static_cast<hsize_t>(c),
          static_cast<hsize_t>(d)};
}

// What to leave out of (or change in) a written file.
struct Damage {
  std::string skip;  // a dataset not written
  bool wrong_dk_shape = false;
  std::string do_name = "do";  // the input's dO dataset, and the output's do_dataset
  bool no_do_attribute = false;
};
Damage skipping(const std::string& name) {
  Damage d;
  d.skip = name;
  return d;
}

void write_input(const std::string& path, const Problem& p, const Damage& dmg = {}) {
  const Case& c = p.c;
  H5Handle f = create(path);
  write_f32(f.get(), "q", dims(c.B, c.H, c.N, c.D), p.q);
  write_f32(f.get(), "k", dims(c.B, c.HK, c.NK, c.D), p.k);
  write_f32(f.get(), "v", dims(c.B, c.HK, c.NK, c.D), p.v);
  if (dmg.skip != "do") write_f32(f.get(), dmg.do_name, dims(c.B, c.H, c.N, c.D), p.d_o);
  if (!c.cu.empty()) {
    const hsize_t n = c.cu.size();
    H5Handle space(RA_H5_CHECK(H5Screate_simple(1, &n, nullptr)), H5Kind::dataspace);
    H5Handle d(RA_H5_CHECK(H5Dcreate2(f.get(), kCuSeqlens, H5T_STD_I64LE, space.get(), H5P_DEFAULT,
                                      H5P_DEFAULT, H5P_DEFAULT)),
               H5Kind::dataset);
    RA_H5_CHECK(H5Dwrite(d.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, c.cu.data()));
  }
  f.close();
}

// The output as `ringattn run --backward` writes it: o, lse, dq, dk, dv and
// the attributes verify reads (and complete = 1, written last by a commit).
void write_output(const std::string& path, const Problem& p, const Damage& dmg = {}) {
  const Case& c = p.c;
  H5Handle f = create(path);
  const auto write = [&](const std::string& name, const std::vector<hsize_t>& shape,
                         const std::vector<float>& data) {
    if (dmg.skip != name) write_f32(f.get(), name, shape, data);
  };
  write("o", dims(c.B, c.H, c.N, c.D), p.o);
  const std::vector<hsize_t> lse_dims{static_cast<hsize_t>(c.B), static_cast<hsize_t>(c.H),
                                      static_cast<hsize_t>(c.N)};
  write("lse", lse_dims, p.lse);
  write("dq", dims(c.B, c.H, c.N, c.D), p.dq);
  if (dmg.wrong_dk_shape)
    write("dk", dims(c.B, c.H, c.NK, c.D),
          std::vector<float>(static_cast<std::size_t>(c.B * c.H * c.NK * c.D)));
  else
    write("dk", dims(c.B, c.HK, c.NK, c.D), p.dk);
  write("dv", dims(c.B, c.HK, c.NK, c.D), p.dv);
  const std::vector<std::pair<std::string, AttrValue>> attrs{
      {"causal", static_cast<std::int64_t>(c.causal)},
      {"window", c.window.text()},
      {"documents", static_cast<std::int64_t>(c.cu.empty() ? 1 : c.cu.size() - 1)},
      {"gradients", std::int64_t{1}},
      {"scale", static_cast<double>(p.scale)},
      {"compute", std::string("f32")},
      {"q_dataset", std::string("q")},
      {"k_dataset", std::string("k")},
      {"v_dataset", std::string("v")},
      {kCompleteAttribute, std::int64_t{1}},
  };
  for (const auto& [name, value] : attrs) write_root_attribute(f.get(), name, value);
  if (!dmg.no_do_attribute) write_root_attribute(f.get(), "do_dataset", dmg.do_name);
  f.close();
}

class VerifyGradients : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ringattn_verify_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  VerifyReport verify(const std::string& out, std::int64_t rows = 256) {
    VerifyRequest req;
    req.input = path("in.h5");
    req.output = path(out);
    req.rows = rows;
    Verifier v(req);
    return v.check();
  }

  std::string dir_;
};

// The element of largest |x| in plane-major (B, heads, rows, D) data, as
// (b, h, i, d) and its flat index.
struct Element {
  std::int64_t b, h, i, d;
  std::size_t flat;
};
Element largest(const std::vector<float>& x, std::int64_t heads, std::int64_t rows,
                std::int64_t D) {
  std::size_t e = 0;
  for (std::size_t j = 0; j < x.size(); ++j)
    if (std::fabs(x[j]) > std::fabs(x[e])) e = j;
  const auto f = static_cast<std::int64_t>(e);
  return {f / (heads * rows * D), f / (rows * D) % heads, f / D % rows, f % D, e};
}

void expect_at(const WorstError& w, const Element& e) {
  EXPECT_EQ(w.b, e.b);
  EXPECT_EQ(w.h, e.h);
  EXPECT_EQ(w.i, e.i);
  EXPECT_EQ(w.d, e.d);
}

TEST_P(VerifyGradients, PassesTheLibrarysGradientsAndFailsACorruptedElement) {
  const Problem p = solve(GetParam());
  const Case& c = p.c;
  write_input(path("in.h5"), p);
  write_output(path("out.h5"), p);

  const VerifyReport ok = verify("out.h5");
  EXPECT_TRUE(ok.gradients);
  EXPECT_EQ(ok.do_name, "do");
  EXPECT_TRUE(ok.all_rows);
  EXPECT_TRUE(ok.all_key_rows);
  EXPECT_EQ(ok.key_rows_checked, c.B * c.HK * c.NK);
  EXPECT_EQ(ok.grad_tolerance, 1e-4);
  EXPECT_TRUE(ok.ok()) << "o " << ok.o.rel() << " dq " << ok.dq.rel() << " dk " << ok.dk.rel()
                       << " dv " << ok.dv.rel();
  EXPECT_GT(ok.dq.scale, 0);
  EXPECT_GT(ok.dk.scale, 0);
  EXPECT_GT(ok.dv.scale, 0);
  EXPECT_GT(ok.dk.floor, 0);
  // fp32 against float64: well inside the tolerance, not merely under it.
  EXPECT_LT(ok.dq.rel(), 1e-5);
  EXPECT_LT(ok.dk.rel(), 1e-5);
  EXPECT_LT(ok.dv.rel(), 1e-5);
  // ...and so against max |ref| alone (the floor matters where a gradient is ~0).
  for (const WorstError* w : {&ok.dq, &ok.dk, &ok.dv})
    EXPECT_LT(w->max_abs / w->scale, 1e-5) << w->max_abs << " of " << w->scale;

  // One element of dk, then of dq, moved by 1% of its tensor's error scale
  // (max |ref|, or gradient_error_floor where that is larger).
  for (const char* tensor : {"dk", "dq"}) {
    SCOPED_TRACE(tensor);
    Problem bad = p;
    const bool is_dk = std::string(tensor) == "dk";
    std::vector<float>& g = is_dk ? bad.dk : bad.dq;
    const Element e = largest(g, is_dk ? c.HK : c.H, is_dk ? c.NK : c.N, c.D);
    const WorstError& before = is_dk ? ok.dk : ok.dq;
    g[e.flat] += static_cast<float>(0.01 * std::max(before.scale, before.floor));
    write_output(path("bad.h5"), bad);
    const VerifyReport r = verify("bad.h5");
    EXPECT_FALSE(r.ok());
    EXPECT_TRUE(r.o_ok && r.lse_ok && r.dv_ok);
    EXPECT_EQ(r.dk_ok, !is_dk);
    EXPECT_EQ(r.dq_ok, is_dk);
    const WorstError& w = is_dk ? r.dk : r.dq;
    expect_at(w, e);
    EXPECT_NEAR(w.rel(), 0.01, 1e-3);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, VerifyGradients,
    ::testing::Values(
        shape("causal_gqa", 2, 4, 2, 37, 37, 8, true), shape("gqa", 1, 4, 2, 33, 33, 16, false),
        shape("cross", 2, 2, 1, 29, 45, 8, false), shape("cross_causal", 1, 4, 2, 50, 21, 8, true),
        windowed(shape("window", 1, 2, 2, 48, 48, 8, true), Window{5, 0}),
        packed(shape("packed_causal", 1, 4, 2, 40, 40, 8, true), {0, 7, 8, 8, 30, 40}),
        packed(shape("packed", 1, 2, 1, 30, 30, 8, false), {0, 12, 30})),
    [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

// More key rows than are checked whole: `rows` of them sampled, the same
// for the same seed; a dk wrong everywhere fails at whichever are drawn.
TEST_F(VerifyGradients, SamplesKeyRowsAndCatchesAWrongDkThere) {
  const Problem p = solve(shape("sampled", 1, 2, 1, 300, 4500, 4, false));
  write_input(path("in.h5"), p);
  write_output(path("out.h5"), p);
  const VerifyReport r = verify("out.h5", 40);
  EXPECT_TRUE(r.all_rows);  // 600 query rows
  EXPECT_FALSE(r.all_key_rows);
  EXPECT_EQ(r.key_rows_checked, 40);
  EXPECT_EQ(r.key_rows_total, 4500);
  EXPECT_TRUE(r.ok()) << "dk " << r.dk.rel() << " dv " << r.dv.rel();

  // 0.1% of the error scale on every element.
  Problem bad = p;
  const float shift = static_cast<float>(1e-3 * std::max(r.dk.scale, r.dk.floor));
  for (float& x : bad.dk) x += shift;
  write_output(path("bad.h5"), bad);
  const VerifyReport b = verify("bad.h5", 40);
  EXPECT_FALSE(b.dk_ok);
  EXPECT_TRUE(b.dq_ok && b.dv_ok);
  EXPECT_NEAR(b.dk.rel(), 1e-3, 1e-4);
}

// The upstream gradient under another name: the output's do_dataset says which.
TEST_F(VerifyGradients, ReadsTheUpstreamGradientTheOutputNames) {
  const Problem p = solve(shape("causal", 1, 4, 2, 40, 40, 8, true));
  Damage named;
  named.do_name = "grad_o";
  write_input(path("in.h5"), p, named);
  write_output(path("out.h5"), p, named);
  const VerifyReport r = verify("out.h5");
  EXPECT_EQ(r.do_name, "grad_o");
  EXPECT_TRUE(r.ok());
}

// An output that says gradients = 1 without all its parts, or an input
// without the dO it names: one Error(input) naming what is missing.
TEST_F(VerifyGradients, RefusesIncompleteBackwardFiles) {
  const Problem p = solve(shape("causal", 1, 4, 2, 40, 40, 8, true));
  write_input(path("in.h5"), p);
  const auto expect_input_error = [&](const std::string& out, const std::string& words) {
    SCOPED_TRACE(out + ": " + words);
    try {
      VerifyRequest req;
      req.input = path("in.h5");
      req.output = path(out);
      Verifier v(req);
      (void)v.check();
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.error_class(), ErrorClass::input) << e.what();
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  for (const char* name : {"dq", "dk", "dv", "lse"}) {
    write_output(path(std::string("no_") + name + ".h5"), p, skipping(name));
    expect_input_error(std::string("no_") + name + ".h5",
                       std::string("gradients = 1 but no dataset '") + name + "'");
  }
  Damage dk_shape;
  dk_shape.wrong_dk_shape = true;
  write_output(path("dk_shape.h5"), p, dk_shape);
  expect_input_error("dk_shape.h5", "dataset 'dk' is [1, 4, 40, 8], not shaped like the input's k");
  Damage no_attr;
  no_attr.no_do_attribute = true;
  write_output(path("no_attr.h5"), p, no_attr);
  expect_input_error("no_attr.h5", "lacks the attribute 'do_dataset'");
  // An input without dO: the output names one the input lacks.
  write_output(path("out.h5"), p);
  write_input(path("in.h5"), p, skipping("do"));
  expect_input_error("out.h5", "dataset 'do': no such dataset");
}

}  // namespace
}  // namespace ringattn
