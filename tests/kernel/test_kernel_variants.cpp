// The CPU kernel's compiled variants and its memory report. Each ISA's tile
// shape runs on every machine, with each vector path this CPU executes, on
// the problems where tile geometry matters (query tiles cut short, tail key
// tiles, diagonal tiles, V packed or read in place); the hooks that pick a
// variant really change the code that runs; a path this CPU lacks is refused;
// and update_state allocates exactly the bytes update_state_workspace_bytes
// reports.
//
//   attn_test_util.hpp    Problem, check_problem, all_cpu_variants, cannot_run
//   kernel/attention.hpp  update_state_workspace_bytes, last_update_state_workspace_bytes
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "kernel/attention.hpp"
#include "kernel/attn_test_util.hpp"
#include "kernel/state.hpp"

namespace ringattn::test {
namespace {

constexpr Tolerance kF32Tol{1e-5, 1e-5};
// As test_kernel_reference's bf16 suite: inputs and P rounded to bf16 (8
// bits), measured against max|v| (see Tolerance::o_against_values).
constexpr Tolerance kBf16Tol{2e-2, 2e-2, true};

Problem base(std::string name, std::int64_t nq, std::int64_t nkv, std::int64_t d, bool causal,
             DType t, std::uint64_t seed) {
  Problem p = shaped(1, 1, nq, nkv, d, t, causal);
  p.name = std::move(name);
  p.seed = seed;
  return p;
}

// Shapes that cut tiles of either size in every way.
std::vector<Problem> shape_problems() {
  std::vector<Problem> out;
  // Several query tiles, diagonal then full key tiles, a tail tile; GQA.
  Problem a = base("q300_kv333_d64_gqa2_causal_f32", 300, 333, 64, true, DType::f32, 1001);
  a.heads_q = 4;
  a.heads_kv = 2;
  a.q_pos = Positions::contiguous(40, 300);
  out.push_back(a);
  // Long rows at the widest head; f16 packs V.
  out.push_back(base("q257_kv1000_d256_full_f16", 257, 1000, 256, false, DType::f16, 1002));
  // One short query tile against keys that fill no tile of either size.
  Problem c = base("q7_kv129_d80_causal_padded", 7, 129, 80, true, DType::f32, 1003);
  c.layout = Layout::padded;  // V rows not D apart: V packed
  c.q_pos = Positions::contiguous(122, 7);
  out.push_back(c);
  // Batch 2, GQA 8, keys a whole number of both tile sizes.
  Problem d = base("q100_kv512_d16_gqa8_b2_full_f32", 100, 512, 16, false, DType::f32, 1004);
  d.batch = 2;
  d.heads_q = 8;
  d.heads_kv = 1;
  out.push_back(d);
  // The bf16 compute path.
  Problem e = base("q129_kv700_d128_causal_bf16compute", 129, 700, 128, true, DType::bf16, 1005);
  e.compute = ComputeType::bf16;
  out.push_back(e);
  return out;
}

std::vector<Problem> variant_problems() {
  std::vector<Problem> out;
  for (const CpuVariant& v : all_cpu_variants())
    for (Problem p : shape_problems()) {
      p.variant = v;
      p.name += '_';
      p.name += variant_name(v);
      out.push_back(p);
    }
  return out;
}

class Variants : public ::testing::TestWithParam<Problem> {};

TEST_P(Variants, MatchesReference) {
  const Problem& p = GetParam();
  if (const std::string why = cannot_run(p.variant); !why.empty()) GTEST_SKIP() << why;
  check_problem(p, p.compute == ComputeType::bf16 ? kBf16Tol : kF32Tol);
}

INSTANTIATE_TEST_SUITE_P(Kernel, Variants, ::testing::ValuesIn(variant_problems()), param_name);

// ---- the hooks select different code ---------------------------------------------------

// Tile shapes group the sums differently and vector paths split l into
// 16, 8 or 4 lanes, so on a long block every pair of variants differs in
// some bits of o; a hook the kernel ignored would make two of them equal.
TEST(VariantHooks, EveryVariantRunsItsOwnCode) {
  Problem pr = base("q200_kv3000_d64_full_f32", 200, 3000, 64, false, DType::f32, 1010);
  const Inputs in(pr);
  std::vector<CpuVariant> ran;
  std::vector<KernelOut> outs;
  for (const CpuVariant& v : all_cpu_variants()) {
    if (!cannot_run(v).empty()) continue;
    AttnParams p = in.dense;
    p.cpu = v;
    ran.push_back(v);
    outs.push_back(run_kernel(p));
  }
  if (ran.size() < 2) GTEST_SKIP() << "fewer than two variants run on this CPU";
  for (std::size_t i = 0; i < ran.size(); ++i)
    for (std::size_t j = i + 1; j < ran.size(); ++j)
      EXPECT_NE(std::memcmp(outs[i].o.data(), outs[j].o.data(), outs[i].o.size() * sizeof(float)),
                0)
          << variant_name(ran[i]) << " and " << variant_name(ran[j]) << " gave identical bits";
}

TEST(VariantHooks, ImplementationNamesTheTileShapeAndPath) {
  AttnParams p;
  p.head_dim = 64;
  p.cpu = {TileShape::avx2, VectorIsa::generic};
  EXPECT_NE(kernel_implementation(p).find("softmax-generic bq=256 bk=64"), std::string::npos)
      << kernel_implementation(p);
  p.cpu = {TileShape::avx512, VectorIsa::generic};
  EXPECT_NE(kernel_implementation(p).find("softmax-generic bq=128 bk=256"), std::string::npos)
      << kernel_implementation(p);
  p.cpu = {};
  EXPECT_NE(kernel_implementation(p).find(std::string("softmax-") +
                                          vector_isa_name(resolve_isa(VectorIsa::native))),
            std::string::npos)
      << kernel_implementation(p);
}

// A path this CPU lacks would fault on its first instruction: refused with
// a usage error instead.
TEST(VariantHooks, RefusesAPathThisCpuLacks) {
  bool any = false;
  for (const VectorIsa isa : {VectorIsa::avx512, VectorIsa::avx2}) {
    if (cpu_runs(isa)) continue;
    any = true;
    Problem pr = base("q16_kv16_d16", 16, 16, 16, false, DType::f32, 1011);
    pr.variant.isa = isa;
    const Inputs in(pr);
    try {
      run_kernel(in.dense);
      ADD_FAILURE() << vector_isa_name(isa) << " path accepted on a CPU without it";
    } catch (const Error& e) {
      EXPECT_EQ(e.error_class(), ErrorClass::usage) << e.what();
      EXPECT_NE(std::string(e.what()).find(vector_isa_name(isa)), std::string::npos) << e.what();
    }
  }
  if (!any)
    GTEST_SKIP() << "this CPU runs every compiled path (widest: "
                 << vector_isa_name(resolve_isa(VectorIsa::native)) << ")";
}

// ---- the workspace it reports is the workspace it allocates ------------------------------

struct WorkspaceCase {
  std::string name;
  Problem problem;
};

std::vector<WorkspaceCase> workspace_cases() {
  std::vector<WorkspaceCase> out;
  for (const TileShape t : {TileShape::avx2, TileShape::avx512, TileShape::native})
    for (const int threads : {1, 3}) {
      const std::string suffix =
          std::string("_tiles_") + tile_shape_name(t) + "_threads" + std::to_string(threads);
      auto add = [&](const std::string& name, Problem p) {
        p.variant.tiles = t;
        p.threads = threads;
        out.push_back({name + suffix, p});
      };
      // f32 V read in place, keys a whole number of tiles: no V packed.
      add("f32_direct", base("", 300, 512, 64, false, DType::f32, 1));
      // f32 V in place but a tail tile to pad.
      add("f32_tail", base("", 300, 333, 64, true, DType::f32, 2));
      // f16: every V tile packed; one short query tile.
      add("f16_packed", base("", 7, 1000, 80, false, DType::f16, 3));
      // V rows not D apart: packed although f32.
      Problem padded = base("", 129, 257, 32, false, DType::f32, 4);
      padded.layout = Layout::padded;
      add("f32_strided", padded);
      // bf16 compute packs V; batch 2 with GQA.
      Problem bf = base("", 100, 600, 128, true, DType::bf16, 5);
      bf.compute = ComputeType::bf16;
      bf.batch = 2;
      bf.heads_q = 4;
      bf.heads_kv = 2;
      add("bf16compute_gqa_b2", bf);  // dot products where the CPU has AVX512_BF16
      bf.variant.bf16 = Bf16Products::fp32;
      add("bf16compute_fp32_products_gqa_b2", bf);
      // The dot path pads an odd head dim's Q and K^T to an even depth.
      Problem odd = base("", 50, 300, 33, false, DType::f16, 6);
      odd.compute = ComputeType::bf16;
      add("bf16compute_d33", odd);
    }
  return out;
}

void PrintTo(const WorkspaceCase& c, std::ostream* os) {
  *os << c.name;
}

class Workspace : public ::testing::TestWithParam<WorkspaceCase> {};

TEST_P(Workspace, EstimateIsWhatUpdateStateAllocates) {
  const Inputs in(GetParam().problem);
  const AttnParams& p = in.laid;
  AttnState s(p.batch, p.heads_q, p.n_q, p.head_dim);
  update_state(p, s);
  const std::size_t allocated = last_update_state_workspace_bytes();
  EXPECT_EQ(update_state_workspace_bytes(p), allocated);
  // Whatever the layout, K^T is packed whole: a floor no estimate may undercut.
  const auto packed_k =
      static_cast<std::size_t>(p.batch * p.heads_kv * p.n_kv * p.head_dim) * sizeof(float);
  EXPECT_GE(allocated, packed_k);
}

INSTANTIATE_TEST_SUITE_P(Kernel, Workspace, ::testing::ValuesIn(workspace_cases()), param_name);

TEST(WorkspaceEmpty, BlockWithoutKeysOrQueriesAllocatesNothing) {
  Problem pr = base("", 40, 50, 16, false, DType::f32, 6);
  const Inputs in(pr);
  AttnState s(1, 1, 40, 16);
  update_state(in.dense, s);
  ASSERT_GT(last_update_state_workspace_bytes(), 0u);  // so the zero below is news
  AttnParams none = in.dense;
  none.n_kv = 0;
  update_state(none, s);
  EXPECT_EQ(last_update_state_workspace_bytes(), 0u);
  EXPECT_EQ(update_state_workspace_bytes(none), 0u);
}

}  // namespace
}  // namespace ringattn::test
