// The CUDA attention kernel against the float64 reference and the CPU kernel,
// over a sweep of head dims (the 64 and 128 instantiations and the padded
// general path), storage types, compute types, causal layouts (contiguous,
// zigzag, striped), GQA, cross-attention, empty rows and empty blocks. Every
// test needs a device and skips, saying so, on machines without one.
//
//   tests/kernel/attn_test_util.hpp  Problem, Inputs (seeded, any layout),
//                                    expect_matches_reference
//   cuda/attention_cuda.hpp          the kernel under test, DeviceBuffer
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/attention_cuda.hpp"
#include "cuda/device.hpp"
#include "cuda/launch_shape.hpp"
#include "kernel/attention.hpp"
#include "kernel/attn_test_util.hpp"

namespace ringattn::test {
namespace {

#define RA_NEED_DEVICE()                                                                 \
  do {                                                                                   \
    if (cuda_device_count() == 0)                                                        \
      GTEST_SKIP() << "no CUDA device: " << cuda_summary() << " (device tests skipped)"; \
  } while (0)

// Tolerances per path, relative to max|v| (o is a convex combination of v):
//   f32 storage, fp32 FMA: fp32 rounding only, as the CPU kernel (no Kahan
//     compensation on the device, hence twice the CPU's bound).
//   f16 storage: P enters P·V rounded to f16 (u = 2^-12): o moves by <= 2u.
//   bf16 storage: P rounded to bf16 (u = 2^-9): <= 2u = 4e-3.
//   compute = bf16: the CPU kernel's bf16 tolerance (see test_kernel_reference.cpp).
Tolerance tolerance_for(const Problem& p) {
  if (p.compute == ComputeType::bf16) return {3e-2, 2e-2, true};
  switch (p.dtype) {
    case DType::f32:
      return {2e-5, 2e-5, false};
    case DType::f16:
      return {2e-3, 1e-3, true};
    case DType::bf16:
      return {1e-2, 5e-3, true};
  }
  return {};
}

// Elements from a tensor's first to one past its last element.
std::size_t extent(const AttnParams& p, const TensorRef& t, std::int64_t heads, std::int64_t n) {
  if (n == 0) return 0;
  return static_cast<std::size_t>((p.batch - 1) * t.batch_stride + (heads - 1) * t.head_stride +
                                  (n - 1) * t.row_stride + p.head_dim);
}

// The problem's laid-out tensors on the device, and params that point there.
struct OnDevice {
  cuda::DeviceBuffer q, k, v;
  AttnParams p;
  explicit OnDevice(const AttnParams& host) : p(host) {
    const std::size_t es = dtype_size(host.dtype);
    const std::size_t qe = extent(host, host.q, host.heads_q, host.n_q) * es;
    const std::size_t ke = extent(host, host.k, host.heads_kv, host.n_kv) * es;
    const std::size_t ve = extent(host, host.v, host.heads_kv, host.n_kv) * es;
    q = cuda::DeviceBuffer(qe);
    k = cuda::DeviceBuffer(ke);
    v = cuda::DeviceBuffer(ve);
    q.upload(host.q.data, qe);
    k.upload(host.k.data, ke);
    v.upload(host.v.data, ve);
    p.q.data = q.data();
    p.k.data = k.data();
    p.v.data = v.data();
  }
};

KernelOut download(const cuda::DeviceBuffer& o, const cuda::DeviceBuffer& lse, std::size_t rows,
                   std::size_t d) {
  KernelOut r;
  r.o.resize(rows * d);
  r.lse.resize(rows);
  o.download(r.o.data(), r.o.size() * sizeof(float));
  lse.download(r.lse.data(), r.lse.size() * sizeof(float));
  return r;
}

KernelOut run_device(const AttnParams& host) {
  OnDevice dev(host);
  const std::size_t rows = static_cast<std::size_t>(host.batch * host.heads_q * host.n_q);
  const std::size_t d = static_cast<std::size_t>(host.head_dim);
  cuda::DeviceBuffer o(rows * d * sizeof(float)), lse(rows * sizeof(float));
  cuda::attention_forward(dev.p, static_cast<float*>(o.data()), static_cast<float*>(lse.data()),
                          nullptr);
  cuda::synchronize(nullptr);
  return download(o, lse, rows, d);
}

// shape_name's, then the layout and the compute type.
std::string case_name(const Problem& p) {
  std::ostringstream os;
  os << shape_name(p) << "_" << layout_name(p.layout);
  if (p.compute == ComputeType::bf16) os << "_bf16compute";
  return os.str();
}

Problem make(std::int64_t n_q, std::int64_t n_kv, std::int64_t d, DType t, bool causal,
             std::uint64_t seed) {
  Problem p = shaped(2, 2, n_q, n_kv, d, t, causal);
  p.seed = seed;
  return p;
}

// ---- the sweep ---------------------------------------------------------------------------

std::vector<Problem> sweep() {
  std::vector<Problem> out;
  const std::int64_t dims[] = {64, 128, 40, 96, 256, 1};
  const std::int64_t lengths[][2] = {{1, 1}, {64, 64}, {129, 200}, {300, 77}, {513, 513}};
  const DType types[] = {DType::f32, DType::f16, DType::bf16};
  std::uint64_t seed = 1000;
  int i = 0;
  for (std::int64_t d : dims)
    for (DType t : types)
      for (bool causal : {false, true}) {
        const auto* len = lengths[i % 5];
        Problem p = make(len[0], len[1], d, t, causal, seed++);
        p.heads_q = 2 * (i % 3 == 0 ? 4 : 1);  // GQA 4:1 on every third case
        p.batch = i % 4 == 1 ? 2 : 1;
        // Strided layouts on some cases; f16/bf16 dense cases take the cp.async path.
        p.layout = i % 5 == 3 ? Layout::padded : i % 7 == 2 ? Layout::token_major : Layout::dense;
        p.name = case_name(p);
        out.push_back(p);
        ++i;
      }
  // compute = bf16 on every storage type (the bf16 tensor-core path with conversion).
  for (DType t : types)
    for (std::int64_t d : {64, 128, 80}) {
      Problem p = make(200, 333, d, t, d == 128, seed++);
      p.compute = ComputeType::bf16;
      p.name = case_name(p);
      out.push_back(p);
    }
  // Long blocks at the two specialised dims.
  for (DType t : {DType::f16, DType::bf16})
    for (std::int64_t d : {64, 128}) {
      Problem p = make(1024, 2048, d, t, true, seed++);
      p.heads_q = 4;
      p.name = case_name(p);
      out.push_back(p);
    }
  return out;
}

// The device kernel on the problem's layout against the reference on its
// dense copy (check_problem's, on the device), printing the errors.
void check_on_device(const Problem& pr) {
  const Inputs in(pr);
  const Errors e = expect_matches_reference(in.dense, run_device(in.laid), run_reference(in.dense),
                                            tolerance_for(pr));
  std::printf("[  errors  ] %s: o %.2e  lse %.2e\n", cuda::kernel_implementation(in.laid).c_str(),
              e.o, e.lse);
}

class CudaSweep : public ::testing::TestWithParam<Problem> {};
TEST_P(CudaSweep, MatchesReference) {
  RA_NEED_DEVICE();
  check_on_device(GetParam());
}
INSTANTIATE_TEST_SUITE_P(Cuda, CudaSweep, ::testing::ValuesIn(sweep()), param_name);

// ---- causal layouts of the ring -------------------------------------------------------------

std::vector<Problem> ring_layouts() {
  std::vector<Problem> out;
  const std::int64_t P = 4, chunk = 100;  // zigzag chunks; 800 tokens in all
  auto zigzag = [&](std::int64_t r) { return zigzag_positions(P, r, 2 * P * chunk); };
  std::uint64_t seed = 2000;
  for (DType t : {DType::f32, DType::f16, DType::bf16})
    for (std::int64_t r : {0, 2})
      for (std::int64_t src : {0, 1, 3}) {
        Problem z = make(2 * chunk, 2 * chunk, t == DType::f16 ? 128 : 64, t, true, seed++);
        z.q_pos = zigzag(r);
        z.k_pos = zigzag(src);
        z.name =
            "zigzag_r" + std::to_string(r) + "_src" + std::to_string(src) + "_" + dtype_name(t);
        out.push_back(z);
        Problem s = make(200, 200, 96, t, true, seed++);
        s.q_pos = Positions::strided(r, P, 200);
        s.k_pos = Positions::strided(src, P, 200);
        s.name =
            "striped_r" + std::to_string(r) + "_src" + std::to_string(src) + "_" + dtype_name(t);
        out.push_back(s);
      }
  return out;
}

class CudaRingLayouts : public ::testing::TestWithParam<Problem> {};
TEST_P(CudaRingLayouts, MatchesReference) {
  RA_NEED_DEVICE();
  check_on_device(GetParam());
}
INSTANTIATE_TEST_SUITE_P(Cuda, CudaRingLayouts, ::testing::ValuesIn(ring_layouts()), param_name);

// ---- edges -----------------------------------------------------------------------------------

TEST(CudaKernel, RowsWithNoVisibleKeyGiveZeroAndMinusInf) {
  RA_NEED_DEVICE();
  for (DType t : {DType::f32, DType::f16}) {
    // Queries at positions 0..99, keys at 50..249: rows 0..49 see nothing.
    Problem pr = make(100, 200, 64, t, true, 3000);
    pr.q_pos = Positions::contiguous(0, 100);
    pr.k_pos = Positions::contiguous(50, 200);
    const Inputs in(pr);
    const KernelOut got = run_device(in.laid);
    for (std::int64_t h = 0; h < pr.heads_q; ++h)
      for (std::int64_t r = 0; r < 50; ++r) {
        const std::size_t row = static_cast<std::size_t>(h * pr.n_q + r);
        EXPECT_EQ(got.lse[row], -kInf) << "row " << r;
        for (std::int64_t d = 0; d < pr.head_dim; ++d)
          ASSERT_EQ(got.o[row * 64 + static_cast<std::size_t>(d)], 0.0f) << "row " << r;
      }
    expect_matches_reference(in.dense, got, run_reference(in.dense), tolerance_for(pr));
  }
}

TEST(CudaKernel, EmptyBlocks) {
  RA_NEED_DEVICE();
  // n_kv = 0: every row is empty. n_q = 0: nothing to do, nothing to touch.
  Problem pr = make(10, 0, 128, DType::f16, false, 3100);
  const Inputs in(pr);
  const KernelOut got = run_device(in.laid);
  for (float x : got.lse) EXPECT_EQ(x, -kInf);
  for (float x : got.o) EXPECT_EQ(x, 0.0f);
  Problem none = make(0, 10, 64, DType::bf16, true, 3101);
  const Inputs in0(none);
  EXPECT_NO_THROW(run_device(in0.laid));
}

TEST(CudaKernel, StateOverSeveralBlocksEqualsOneBlock) {
  RA_NEED_DEVICE();
  // A ring step at a time: K/V split in three uneven blocks folded into one
  // device state, finalized in place, against the reference of the whole.
  for (DType t : {DType::f32, DType::f16, DType::bf16}) {
    Problem pr = make(300, 700, 128, t, true, 3200);
    pr.heads_q = 4;
    const Inputs in(pr);
    OnDevice dev(in.laid);
    cuda::DeviceAttnState s(pr.batch, pr.heads_q, pr.n_q, pr.head_dim);
    s.reset(nullptr);
    const std::int64_t cuts[] = {0, 250, 251, 700};
    const std::size_t es = dtype_size(t);
    for (int c = 0; c < 3; ++c) {
      AttnParams blk = dev.p;
      blk.n_kv = cuts[c + 1] - cuts[c];
      blk.k.data = static_cast<const char*>(dev.p.k.data) +
                   static_cast<std::size_t>(cuts[c] * dev.p.k.row_stride) * es;
      blk.v.data = static_cast<const char*>(dev.p.v.data) +
                   static_cast<std::size_t>(cuts[c] * dev.p.v.row_stride) * es;
      blk.k_pos = Positions::contiguous(cuts[c], blk.n_kv);
      cuda::update_state(blk, s, nullptr);
    }
    const std::size_t rows = static_cast<std::size_t>(s.num_rows());
    cuda::DeviceBuffer lse(rows * sizeof(float));
    cuda::finalize(s, s.acc(), static_cast<float*>(lse.data()), nullptr);  // o in place of acc
    cuda::synchronize(nullptr);
    KernelOut got;
    got.o.resize(rows * 128);
    got.lse.resize(rows);
    cuda::copy_to_host(got.o.data(), s.acc(), got.o.size() * sizeof(float));
    lse.download(got.lse.data(), rows * sizeof(float));
    expect_matches_reference(in.dense, got, run_reference(in.dense), tolerance_for(pr));
  }
}

TEST(CudaKernel, AgreesWithTheCpuKernel) {
  RA_NEED_DEVICE();
  // Same inputs, same state semantics: the device and the CPU kernel agree as
  // closely as each agrees with the reference.
  for (DType t : {DType::f32, DType::f16, DType::bf16}) {
    Problem pr = make(257, 390, 128, t, true, 3300);
    pr.heads_q = 4;
    pr.heads_kv = 2;
    const Inputs in(pr);
    const KernelOut dev = run_device(in.laid);
    const KernelOut cpu = run_kernel(in.laid);
    RefOut as_ref;  // the CPU's answer, widened, as the yardstick
    as_ref.o.assign(cpu.o.begin(), cpu.o.end());
    as_ref.lse.assign(cpu.lse.begin(), cpu.lse.end());
    expect_matches_reference(in.dense, dev, as_ref, tolerance_for(pr));
  }
}

}  // namespace
}  // namespace ringattn::test
