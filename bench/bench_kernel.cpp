// Micro-benchmarks of the kernel's parts: the fused forward (each tile
// shape), the backward (attention_backward, 2.5x the forward's flops), its
// two tile products, the softmax step (each vector path), the
// compensated fold of P·V, and the FMA peak they are judged against. Each
// reports GFLOP/s and, where it makes sense, the fraction of the FMA peak
// measured once at start-up in the same process (the machine is shared and
// noisy: compare ratios from one run, never bare seconds across runs).
//
//   build/bench/bench_kernel --benchmark_filter=Fused
#include <benchmark/benchmark.h>

#include <vector>

#include "core/aligned_buffer.hpp"
#include "core/cpu.hpp"
#include "core/fma_peak.hpp"
#include "core/seeded_data.hpp"
#include "kernel/attention.hpp"
#include "kernel/backward.hpp"
#include "kernel/softmax_tile.hpp"
#include "kernel/tile_gemm.hpp"

namespace {
using namespace ringattn;

double peak_per_thread() {
  static const double peak = measure_fma_peak(1, 0.3).gflops;
  return peak;
}

// Fused forward: args {N, D, causal, threads, tiles}, H = 4, f32; tiles 0 =
// this CPU's shape, 1 = the AVX2 shape (256x64), 2 = the AVX-512 one (128x256).
void BM_Fused(benchmark::State& st) {
  const std::int64_t n = st.range(0), d = st.range(1), h = 4;
  const bool causal = st.range(2) != 0;
  const int threads = static_cast<int>(st.range(3));
  const TileShape tiles = st.range(4) == 1   ? TileShape::avx2
                          : st.range(4) == 2 ? TileShape::avx512
                                             : TileShape::native;
  const std::size_t qn = static_cast<std::size_t>(h * n * d);
  AlignedBuffer<float> q(qn), k(qn), v(qn), o(qn), lse(static_cast<std::size_t>(h * n));
  fill_seeded(q.data(), DType::f32, qn, 1);
  fill_seeded(k.data(), DType::f32, qn, 2);
  fill_seeded(v.data(), DType::f32, qn, 3);
  AttnParams p = AttnParams::dense(q.data(), k.data(), v.data(), DType::f32, 1, h, h, n, n, d);
  p.causal = causal;
  p.threads = threads;
  p.cpu.tiles = tiles;
  for (auto _ : st) attention_forward(p, o.data(), lse.data());
  const double flops = attention_flops(p);
  st.counters["GFLOPs"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["peak_GFLOPs"] = peak_per_thread() * threads;
  st.SetLabel(kernel_implementation(p));
}
BENCHMARK(BM_Fused)
    ->ArgNames({"N", "D", "causal", "threads", "tiles"})
    ->Args({2048, 64, 0, 1, 0})
    ->Args({2048, 128, 0, 1, 0})
    ->Args({2048, 128, 1, 1, 0})
    ->Args({2048, 128, 0, 1, 1})
    ->Args({2048, 128, 0, 1, 2})
    ->Args({4096, 128, 0, 2, 0})
    ->Args({4096, 128, 1, 2, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The backward (GradState reset, fold, finish) on the forward's o and lse:
// args {N, D, causal, threads}, H = 4, f32.
void BM_Backward(benchmark::State& st) {
  const std::int64_t n = st.range(0), d = st.range(1), h = 4;
  const int threads = static_cast<int>(st.range(3));
  const std::size_t qn = static_cast<std::size_t>(h * n * d);
  AlignedBuffer<float> q(qn), k(qn), v(qn), o(qn), lse(static_cast<std::size_t>(h * n));
  AlignedBuffer<float> d_o(qn), dq(qn), dk(qn), dv(qn);  // (H, N, D) each
  fill_seeded(q.data(), DType::f32, qn, 1);
  fill_seeded(k.data(), DType::f32, qn, 2);
  fill_seeded(v.data(), DType::f32, qn, 3);
  fill_seeded(d_o.data(), DType::f32, qn, 4);
  AttnParams p = AttnParams::dense(q.data(), k.data(), v.data(), DType::f32, 1, h, h, n, n, d);
  p.causal = st.range(2) != 0;
  p.threads = threads;
  attention_forward(p, o.data(), lse.data());
  for (auto _ : st)
    attention_backward(p, {d_o.data(), o.data(), lse.data()}, dq.data(), dk.data(), dv.data());
  st.counters["GFLOPs"] = benchmark::Counter(attention_backward_flops(p) * 1e-9,
                                             benchmark::Counter::kIsIterationInvariantRate);
  st.counters["peak_GFLOPs"] = peak_per_thread() * threads;
}
BENCHMARK(BM_Backward)
    ->ArgNames({"N", "D", "causal", "threads"})
    ->Args({2048, 64, 0, 1})
    ->Args({2048, 128, 0, 1})
    ->Args({2048, 128, 1, 1})
    ->Args({4096, 128, 0, 2})
    ->Args({4096, 128, 1, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// One tile product at a time, on cache-resident operands: args {m, n, k}.
void BM_TileGemm(benchmark::State& st) {
  const int m = static_cast<int>(st.range(0)), n = static_cast<int>(st.range(1)),
            k = static_cast<int>(st.range(2));
  AlignedBuffer<float> a(static_cast<std::size_t>(m) * k), b(static_cast<std::size_t>(k) * n),
      c(static_cast<std::size_t>(m) * n);
  fill_seeded(a.data(), DType::f32, a.size(), 1, 0, 0.01f);
  fill_seeded(b.data(), DType::f32, b.size(), 2, 0, 0.01f);
  c.fill(0.0f);
  const TileGemm g(m, n, k, m, k, m, true);
  for (auto _ : st) {
    g(a.data(), b.data(), c.data());
    benchmark::DoNotOptimize(c.data());
  }
  const double flops = 2.0 * m * n * k;
  st.counters["GFLOPs"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["peak_GFLOPs"] = peak_per_thread();
  st.SetLabel(g.jit() ? std::string("libxsmm ") + tile_gemm_target() : "portable");
}
// The kernel's AVX2 shapes at D = 128: S^T = K.Q^T (64 x 256 x 128) and
// O^T += V^T.P^T (128 x 256 x 64), and the AVX-512 ones.
BENCHMARK(BM_TileGemm)
    ->ArgNames({"m", "n", "k"})
    ->Args({64, 256, 128})
    ->Args({128, 256, 64})
    ->Args({64, 256, 64})
    ->Args({256, 128, 128})
    ->Args({128, 128, 256});

VectorIsa isa_arg(std::int64_t a) {
  return a == 0 ? VectorIsa::avx512 : a == 1 ? VectorIsa::avx2 : VectorIsa::generic;
}

// The softmax step on a (rows x bk) score tile with D = 128: args {rows, bk,
// isa}, isa 0 = AVX-512, 1 = AVX2, 2 = generic.
void BM_SoftmaxTile(benchmark::State& st) {
  const int rows = static_cast<int>(st.range(0)), bk = static_cast<int>(st.range(1)), d = 128;
  const VectorIsa isa = isa_arg(st.range(2));
  if (!cpu_runs(isa)) {
    st.SkipWithError("this CPU cannot execute this path");
    return;
  }
  AlignedBuffer<float> s(rows * bk), src(rows * bk), m2(rows), lanes(rows * kLanes),
      lcomp(rows * kLanes), acc(rows * d);
  fill_seeded(src.data(), DType::f32, src.size(), 5, 0, 8.0f);
  acc.fill(0.0f);
  lanes.fill(0.0f);
  lcomp.fill(0.0f);
  m2.fill(-1e30f);
  for (auto _ : st) {
    std::copy_n(src.data(), src.size(), s.data());
    softmax_tile({.s = s.data(),
                  .rows = rows,
                  .bk = bk,
                  .m2 = m2.data(),
                  .l_lanes = lanes.data(),
                  .l_comp = lcomp.data(),
                  .acc_partial = nullptr,
                  .acc = acc.data(),
                  .acc_comp = nullptr,
                  .head_dim = d,
                  .round_bf16 = false},
                 isa);
    benchmark::DoNotOptimize(s.data());
  }
  st.counters["elements/s"] =
      benchmark::Counter(rows * bk, benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel(vector_isa_name(isa));
}
BENCHMARK(BM_SoftmaxTile)
    ->ArgNames({"rows", "bk", "isa"})
    ->Args({256, 64, 0})
    ->Args({256, 64, 1})
    ->Args({256, 64, 2})
    ->Args({128, 256, 0});

// The compensated fold of P·V into the running total, once per 256 keys, on a
// (rows x D) tile: args {rows, D}. Compare its time with one tile product of
// the same shape (BM_TileGemm) to see its share of the kernel.
void BM_CompensatedFold(benchmark::State& st) {
  const auto n = static_cast<std::size_t>(st.range(0) * st.range(1));
  AlignedBuffer<float> sum(n), comp(n), x(n);
  fill_seeded(x.data(), DType::f32, n, 6, 0, 1e-3f);
  sum.fill(1.0f);
  comp.fill(0.0f);
  for (auto _ : st) {
    compensated_add(sum.data(), comp.data(), x.data(), static_cast<std::int64_t>(n));
    benchmark::DoNotOptimize(sum.data());
  }
  st.counters["elements/s"] =
      benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_CompensatedFold)
    ->ArgNames({"rows", "D"})
    ->Args({128, 128})
    ->Args({256, 128})
    ->Args({128, 64})
    ->Args({256, 64});

}  // namespace

BENCHMARK_MAIN();
