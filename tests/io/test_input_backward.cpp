// The backward's inputs: the upstream gradient dO and a reused forward's o
// and lse. Named datasets pass the same checks as q (their own float type,
// q's shape, lse with 3 dimensions) and a bad or missing one is the same
// Error(input) on every rank naming the dataset, the file and the setting
// that asked for it; unnamed ones are neither checked nor opened. Their
// shard reads give every rank its own rows under every partition, f32 and
// f16 storage, widened or not, collectively.
#include <gtest/gtest.h>

#include <cstring>
#include <sstream>

#include "core/aligned_buffer.hpp"
#include "io/input_file.hpp"
#include "io_test_util.hpp"

namespace ringattn::test {
namespace {

InputNames backward_names(bool reuse_forward) {
  InputNames n;
  n.d_o = "do";
  if (reuse_forward) {
    n.o = "o";
    n.lse = "lse";
  }
  return n;
}

struct BackwardCase {
  FileType q_type;   // q, k, v
  FileType do_type;  // do, o, lse
  bool chunked;
};

std::ostream& operator<<(std::ostream& os, const BackwardCase& c) {
  const auto name = [](FileType t) { return t == FileType::f16 ? "f16" : "f32"; };
  return os << "q_" << name(c.q_type) << "_do_" << name(c.do_type)
            << (c.chunked ? "_chunked_gzip" : "_contiguous");
}

class BackwardRead : public IoTest, public ::testing::WithParamInterface<BackwardCase> {};

TEST_P(BackwardRead, EveryPartitionReadsTheRanksOwnRows) {
  const BackwardCase c = GetParam();
  const InputShape s;  // B 2, Hq 4, Hkv 2, Nq 1001, Nkv 517, D 8
  on_root([&] {
    auto specs = qkv_specs(s, c.q_type, c.chunked);
    for (auto& b : backward_specs(s, c.do_type, c.chunked, true)) specs.push_back(b);
    write_h5(path("in.h5"), specs);
  });
  InputFile in = InputFile::open(comm_, path("in.h5"), backward_names(true));
  const InputInfo& info = in.info();
  const DType want_do = c.do_type == FileType::f16 ? DType::f16 : DType::f32;
  EXPECT_EQ(info.dtype, c.q_type == FileType::f16 ? DType::f16 : DType::f32);
  for (InputTensor t : {InputTensor::d_o, InputTensor::o, InputTensor::lse}) {
    EXPECT_TRUE(info.has(t));
    EXPECT_EQ(info.dtype_of(t), want_do);
  }
  EXPECT_EQ(info.d_o.name, "do");
  EXPECT_EQ(info.d_o.dims, info.q.dims);
  EXPECT_EQ(info.lse.dims, (std::vector<std::int64_t>{s.B, s.Hq, s.Nq}));

  for (PartitionKind kind : kDensePartitions) {
    const Partition pq(kind, s.Nq, size_);
    for (InputTensor t : {InputTensor::d_o, InputTensor::o, InputTensor::lse}) {
      check_read(in, t, pq, {0, s.B, 0, s.Hq}, DType::f32, rank_);
      // One batch, a head group in the middle: what a streaming job reads.
      check_read(in, t, pq, {1, 1, 1, 2}, DType::f32, rank_);
      if (want_do == DType::f16) check_read(in, t, pq, {0, s.B, 1, 3}, DType::f16, rank_);
    }
  }
  in.close();
}

INSTANTIATE_TEST_SUITE_P(Storage, BackwardRead,
                         ::testing::Values(BackwardCase{FileType::f32, FileType::f32, false},
                                           BackwardCase{FileType::f32, FileType::f16, true},
                                           BackwardCase{FileType::f16, FileType::f32, true},
                                           BackwardCase{FileType::f16, FileType::f16, false}),
                         ::testing::PrintToStringParamName());

using BackwardInput = IoTest;

// dO alone (no --reuse-forward): o and lse stay unread even when present.
TEST_F(BackwardInput, DoAloneLeavesOAndLseUnopened) {
  InputShape s;
  s.Nq = 40;
  s.Nkv = 24;
  on_root([&] {
    auto specs = qkv_specs(s, FileType::f16, false);
    for (auto& b : backward_specs(s, FileType::f32, false, false)) specs.push_back(b);
    // A broken lse nobody asked for is not checked.
    specs.push_back({"lse", {2}, FileType::i32, kInputLseSeries});
    write_h5(path("in.h5"), specs);
  });
  InputFile in = InputFile::open(comm_, path("in.h5"), backward_names(false));
  EXPECT_TRUE(in.info().has(InputTensor::d_o));
  EXPECT_FALSE(in.info().has(InputTensor::o));
  EXPECT_FALSE(in.info().has(InputTensor::lse));
  EXPECT_EQ(in.info().lse.object, H5Object::missing);
  EXPECT_EQ(in.info().dtype_of(InputTensor::d_o), DType::f32);
  const Partition pq(PartitionKind::zigzag, s.Nq, size_);
  check_read(in, InputTensor::d_o, pq, {0, s.B, 0, s.Hq}, DType::f32, rank_);
  // Reading what was not asked for is the same usage Error everywhere.
  AlignedBuffer<float> buf(in.shard_elements(InputTensor::lse, pq, {0, s.B, 0, s.Hq}) + 1);
  expect_agreed_error(
      comm_,
      [&] {
        in.read_shard(InputTensor::lse, pq, {0, s.B, 0, s.Hq}, DType::f32, buf.data());
      },
      ErrorClass::usage, {"in.h5", "'lse'", "not opened"});
  // dO's partition is over q's tokens.
  expect_agreed_error(comm_,
                      [&] {
                        in.read_shard(InputTensor::d_o,
                                      Partition(PartitionKind::zigzag, s.Nkv, size_),
                                      {0, s.B, 0, s.Hq}, DType::f32, buf.data());
                      },
                      ErrorClass::usage, {"in.h5", "'do'", "tokens"});
  // The file still reads after agreed errors.
  check_read(in, InputTensor::d_o, pq, {1, 1, 0, s.Hq}, DType::f32, rank_);
}

// Without names nothing of the backward is checked: a forward run reads a
// file whose dO is broken.
TEST_F(BackwardInput, UnnamedDatasetsAreNotChecked) {
  const InputShape s{1, 2, 1, 16, 16, 4};
  on_root([&] {
    auto specs = qkv_specs(s, FileType::f32, false);
    specs.push_back({"do", {1, 2, 15, 4}, FileType::f64, kInputDoSeries});
    write_h5(path("in.h5"), specs);
  });
  InputFile in = InputFile::open(comm_, path("in.h5"));
  EXPECT_FALSE(in.info().has(InputTensor::d_o));
}

// A dataset named by a custom --do-name.
TEST_F(BackwardInput, CustomDoName) {
  const InputShape s{1, 2, 1, 16, 16, 4};
  on_root([&] {
    auto specs = qkv_specs(s, FileType::f32, false);
    auto b = backward_specs(s, FileType::f32, false, false);
    b[0].name = "grad_out";
    specs.push_back(b[0]);
    write_h5(path("in.h5"), specs);
  });
  InputNames names;
  names.d_o = "grad_out";
  const InputInfo info = inspect_input(comm_, path("in.h5"), names);
  EXPECT_EQ(info.d_o.name, "grad_out");
  EXPECT_EQ(info.d_o.object, H5Object::dataset);
}

class BackwardValidate : public IoTest {
 protected:
  // Writes q, k, v and `extra` as bad.h5 on rank 0 and expects the open with
  // `names` to fail the same way everywhere.
  void expect_bad(const std::vector<DatasetSpec>& extra, const InputNames& names,
                  std::vector<std::string> needles) {
    const std::string p = path("bad.h5");
    on_root([&] {
      auto specs = qkv_specs(s_, FileType::f32, false);
      specs.insert(specs.end(), extra.begin(), extra.end());
      write_h5(p, specs);
    });
    needles.push_back(p);
    expect_agreed_error(
        comm_, [&] { (void)InputFile::open(comm_, p, names); }, ErrorClass::input, needles);
  }
  std::vector<DatasetSpec> good(FileType t = FileType::f32) const {
    return backward_specs(s_, t, false, true);
  }
  InputShape s_{2, 4, 2, 40, 24, 8};
};

TEST_F(BackwardValidate, MissingDo) {
  expect_bad({}, backward_names(false),
             {"dataset 'do'", "no such dataset", "k, q, v", "upstream gradient", "--do-name"});
}

TEST_F(BackwardValidate, MissingOrLseForReuseForward) {
  auto specs = good();
  specs.pop_back();  // no lse
  expect_bad(specs, backward_names(true),
             {"dataset 'lse'", "no such dataset", "--reuse-forward reads 'o' and 'lse'"});
  specs = good();
  specs.erase(specs.begin() + 1);  // no o
  expect_bad(specs, backward_names(true),
             {"dataset 'o'", "no such dataset", "--reuse-forward reads 'o' and 'lse'"});
}

TEST_F(BackwardValidate, DoShapedUnlikeQ) {
  auto specs = good();
  specs[0].dims[2] = 39;  // tokens
  expect_bad(specs, backward_names(false),
             {"dataset 'do' [2, 4, 39, 8]", "exactly like 'q'", "[2, 4, 40, 8]"});
  specs = good();
  specs[0].dims[1] = 2;  // K/V's heads, not q's
  expect_bad(specs, backward_names(false), {"dataset 'do' [2, 2, 40, 8]", "exactly like 'q'"});
  specs = good();
  specs[1].dims[3] = 4;  // o's head dim
  expect_bad(specs, backward_names(true), {"dataset 'o' [2, 4, 40, 4]", "exactly like 'q'"});
}

TEST_F(BackwardValidate, DoOfTheWrongRankOrType) {
  auto specs = good();
  specs[0].dims = {2, 4, 40};
  expect_bad(specs, backward_names(false),
             {"dataset 'do'", "3 dimensions", "expected 4 [B, H, N, D]"});
  specs = good();
  specs[0].type = FileType::i32;
  expect_bad(specs, backward_names(false), {"dataset 'do'", "integer"});
  specs = good();
  specs[0].type = FileType::f64;
  expect_bad(specs, backward_names(false), {"dataset 'do'", "float64"});
}

TEST_F(BackwardValidate, LseOfTheWrongRank) {
  auto specs = good();
  specs[2].dims = {2, 4, 40, 1};
  expect_bad(specs, backward_names(true),
             {"dataset 'lse'", "4 dimensions", "[2, 4, 40, 1]", "expected 3 [B, H, N]"});
  specs[2].dims = {2, 4};
  expect_bad(specs, backward_names(true), {"dataset 'lse'", "2 dimensions", "expected 3"});
}

TEST_F(BackwardValidate, LseShapedUnlikeQ) {
  auto specs = good();
  specs[2].dims = {2, 4, 41};
  expect_bad(specs, backward_names(true),
             {"dataset 'lse' [2, 4, 41]", "like 'q' without D", "[2, 4, 40]"});
}

// dO's type is its own: f16 beside f32 q is fine (the reads widen it).
TEST_F(BackwardValidate, DoMayHaveAnotherTypeThanQ) {
  const std::string p = path("mixed.h5");
  on_root([&] {
    auto specs = qkv_specs(s_, FileType::f32, false);
    for (auto& b : good(FileType::f16)) specs.push_back(b);
    specs[4].type = FileType::f32;  // o f32, do and lse f16
    write_h5(p, specs);
  });
  const InputInfo info = inspect_input(comm_, p, backward_names(true));
  EXPECT_EQ(info.dtype, DType::f32);
  EXPECT_EQ(info.dtype_of(InputTensor::d_o), DType::f16);
  EXPECT_EQ(info.dtype_of(InputTensor::o), DType::f32);
  EXPECT_EQ(info.dtype_of(InputTensor::lse), DType::f16);
}

}  // namespace
}  // namespace ringattn::test
