// Timing the fused attention kernel (see bench_kernel.hpp).
#include "job/bench_kernel.hpp"

#include <algorithm>
#include <memory>
#include <vector>

#include "core/aligned_buffer.hpp"
#include "core/cpu.hpp"
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/fma_peak.hpp"
#include "core/seeded_data.hpp"
#include "core/timer.hpp"
#include "core/version.hpp"
#include "cuda/attention_cuda.hpp"
#include "cuda/device.hpp"
#include "cuda/device_peak.hpp"
#include "cuda/launch_shape.hpp"
#include "kernel/attention.hpp"
#include "kernel/backward.hpp"
#include "kernel/softmax_tile.hpp"

namespace ringattn {
namespace {

// The flags' names of the CPU kernel's variants (CLI11 has checked them).
TileShape tile_shape_of(const std::string& s) {
  return s == "avx2" ? TileShape::avx2 : s == "avx512" ? TileShape::avx512 : TileShape::native;
}
VectorIsa vector_isa_of(const std::string& s) {
  return s == "avx512"    ? VectorIsa::avx512
         : s == "avx2"    ? VectorIsa::avx2
         : s == "generic" ? VectorIsa::generic
                          : VectorIsa::native;
}

Bf16Products bf16_products_of(const std::string& s) {
  return s == "amx"    ? Bf16Products::amx
         : s == "dot"  ? Bf16Products::dot
         : s == "fp32" ? Bf16Products::fp32
                       : Bf16Products::native;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The flops of the pass timed: the backward's five tile products over the
// visible pairs count 2.5x the forward's two.
double pass_flops(const KernelBenchRequest& o, const AttnParams& p) {
  return o.backward ? attention_backward_flops(p) : attention_flops(p);
}

// What every record says, whichever backend timed it: the problem and the
// timings (the median is the figure).
nlohmann::json problem_and_times(const KernelBenchRequest& o, const AttnParams& p,
                                 const char* backend, const std::string& implementation,
                                 const std::vector<double>& secs) {
  return {
      {"benchmark", "kernel"},
      {"pass", o.backward ? "backward" : "forward"},
      {"backend", backend},
      {"version", kVersion},
      {"implementation", implementation},
      {"batch", o.batch},
      {"n", o.n},
      {"n_kv", p.n_kv},
      {"d", o.d},
      {"heads", o.heads},
      {"kv_heads", p.heads_kv},
      {"dtype", dtype_name(p.dtype)},
      {"compute", compute_type_name(p.compute)},
      {"causal", o.causal},
      {"window", o.window},
      {"reps", o.reps},
      {"seconds", median(secs)},
      {"seconds_min", *std::min_element(secs.begin(), secs.end())},
      {"flops", pass_flops(o, p)},
  };
}

nlohmann::json or_null(bool known, double x) {
  return known ? nlohmann::json(x) : nlohmann::json(nullptr);
}

// The device kernel on the same problem: p points at host tensors, which
// time_attention_forward copies to the device once.
nlohmann::json bench_cuda(const KernelBenchRequest& o, const AttnParams& p) {
  cuda::DeviceInfo dev;
  std::vector<double> secs;
  if constexpr (kCudaBuilt) {
    dev = cuda::current_device_info();
    secs = cuda::time_attention_forward(p, o.warmup, o.reps);
  } else {
    RA_FAIL(usage, "bench kernel --backend cuda: ", kNoCudaBuild);
  }
  const cuda::DevicePeak peak =
      cuda::dense_tensor_peak(dev.name, dev.cc_major, dev.cc_minor, dev.sm_count, dev.clock_mhz);
  const double flops = attention_flops(p);
  const double sec = median(secs);
  const double tflops = flops / sec / 1e12;
  nlohmann::json j = problem_and_times(o, p, "cuda", cuda::kernel_implementation(p), secs);
  j.update({
      {"device", dev.name},
      {"sm_count", dev.sm_count},
      {"compute_capability", std::to_string(dev.cc_major) + "." + std::to_string(dev.cc_minor)},
      {"tflops", tflops},
      {"peak_tflops", or_null(peak.known, peak.tflops)},
      {"peak_source", peak.source},
      {"fraction_of_peak", or_null(peak.known, tflops / peak.tflops)},
  });
  return j;
}

// The problem a run times: seeded inputs and the kernel's parameters.
struct Problem {
  std::int64_t n_kv = 0, kv_heads = 0;
  int threads = 1;
  DType dt = DType::f32;
  CpuVariant variant;
  AlignedBuffer<char> q, k, v;
  AlignedBuffer<float> out, lse;  // (B, H, N, D), (B, H, N): the forward's
  AlignedBuffer<float> d_o, dq;   // (B, H, N, D) f32: the backward's (empty for a forward)
  AlignedBuffer<float> dk, dv;    // (B, H_kv, N_kv, D) f32
  AttnParams p;
};

std::unique_ptr<Problem> make_problem(const KernelBenchRequest& o) {
  // The backward is the CPU kernel's, in fp32 products only.
  RA_CHECK(!o.backward || o.compute == "f32", usage, "bench kernel --backward: the backward ",
           "computes in f32 only, not --compute ", o.compute);
  RA_CHECK(!o.backward || o.backend == "cpu", usage, "bench kernel --backward: the backward ",
           "runs on the CPU only, not --backend ", o.backend);
  RA_CHECK(o.backend != "cuda" || cuda_device_count() > 0, usage,
           "bench kernel --backend cuda: no CUDA device (", cuda_summary(), ")");
  auto pr = std::make_unique<Problem>();
  pr->n_kv = o.n_kv > 0 ? o.n_kv : o.n;
  pr->kv_heads = o.kv_heads > 0 ? o.kv_heads : o.heads;
  pr->threads = o.threads > 0 ? o.threads : default_threads();
  pr->dt = parse_dtype(o.dtype);
  // The CPU kernel's variant (the device kernel has its own shapes).
  pr->variant = o.backend == "cpu"
                    ? CpuVariant{tile_shape_of(o.tiles), vector_isa_of(o.vector_path),
                                 bf16_products_of(o.bf16_products)}
                    : CpuVariant{};
  // Refused before anything is allocated or timed: the path would fault here.
  RA_CHECK(cpu_runs(pr->variant.isa), usage, "bench kernel --vector-path ", o.vector_path,
           ": this CPU cannot run it (widest here: ",
           vector_isa_name(resolve_isa(VectorIsa::native)), ")");
  const std::string no_bf16 = bf16_products_missing(pr->variant.bf16);
  RA_CHECK(no_bf16.empty(), usage, "bench kernel --bf16-products ", o.bf16_products, ": ", no_bf16);
  const std::size_t qn = static_cast<std::size_t>(o.batch * o.heads * o.n * o.d);
  const std::size_t kn = static_cast<std::size_t>(o.batch * pr->kv_heads * pr->n_kv * o.d);
  const std::size_t es = dtype_size(pr->dt);
  pr->q.resize(qn * es);
  pr->k.resize(kn * es);
  pr->v.resize(kn * es);
  fill_seeded(pr->q.data(), pr->dt, qn, o.seed);
  fill_seeded(pr->k.data(), pr->dt, kn, o.seed + 1);
  fill_seeded(pr->v.data(), pr->dt, kn, o.seed + 2);
  AttnParams& p = pr->p;
  p = AttnParams::dense(pr->q.data(), pr->k.data(), pr->v.data(), pr->dt, o.batch, o.heads,
                        pr->kv_heads, o.n, pr->n_kv, o.d);
  p.causal = o.causal;
  p.window = Window::parse(o.window, "bench kernel --window");
  p.threads = pr->threads;
  p.compute = parse_compute_type(o.compute.c_str());
  p.cpu = pr->variant;
  p.validate();
  pr->out.resize(qn);
  pr->lse.resize(static_cast<std::size_t>(o.batch * o.heads * o.n));
  if (o.backward) {
    pr->d_o.resize(qn);
    pr->dq.resize(qn);
    pr->dk.resize(kn);
    pr->dv.resize(kn);
    fill_seeded(pr->d_o.data(), DType::f32, qn, o.seed + 3);
  }
  return pr;
}

// The larger of two measurements of one peak (0: not measured here).
struct Peak {
  double gflops = 0;
  std::string isa;
};

// The backward's kernel line: its own tile shape (it ignores --tiles), the
// forward's tile-product code generator and the vector path it runs.
std::string backward_implementation(const AttnParams& p) {
  const std::string forward = kernel_implementation(p);
  return "backward " + forward.substr(0, forward.find(' ')) + " softmax-" +
         vector_isa_name(resolve_isa(p.cpu.isa)) + " compute=f32";
}

nlohmann::json record(const KernelBenchRequest& o, const Problem& pr,
                      const std::vector<double>& secs, const Peak& fma, const Peak& dot,
                      const Peak& amx) {
  const AttnParams& p = pr.p;
  const double flops = pass_flops(o, p);
  const double sec = median(secs);
  const double gflops = flops / sec / 1e9;
  const bool bf16 = p.compute == ComputeType::bf16;
  const Bf16Products products = resolve_bf16_products(p.cpu.bf16);
  nlohmann::json j = problem_and_times(
      o, p, "cpu", o.backward ? backward_implementation(p) : kernel_implementation(p), secs);
  j.update({
      {"tiles", o.backward ? nlohmann::json(nullptr) : nlohmann::json(o.tiles)},
      {"vector_path", vector_isa_name(resolve_isa(pr.variant.isa))},
      {"bf16_products", bf16 ? nlohmann::json(bf16_products_name(products)) : nullptr},
      {"threads", pr.threads},
      {"gflops", gflops},
      {"peak_gflops", fma.gflops},
      {"peak_isa", fma.isa},
      {"fraction_of_peak", gflops / fma.gflops},
      {"bf16_peak_gflops", or_null(dot.gflops > 0, dot.gflops)},
      {"fraction_of_bf16_peak",
       or_null(bf16 && products == Bf16Products::dot && dot.gflops > 0, gflops / dot.gflops)},
      {"amx_peak_gflops", or_null(amx.gflops > 0, amx.gflops)},
      {"fraction_of_amx_peak",
       or_null(bf16 && products == Bf16Products::amx && amx.gflops > 0, gflops / amx.gflops)},
  });
  return j;
}

// One run of the pass timed. The backward is all of attention_backward:
// GradState::reset (the query side packed), the fold, finish (dQ out).
void run_pass(const KernelBenchRequest& o, Problem& pr) {
  if (o.backward)
    attention_backward(pr.p, {pr.d_o.data(), pr.out.data(), pr.lse.data()}, pr.dq.data(),
                       pr.dk.data(), pr.dv.data());
  else
    attention_forward(pr.p, pr.out.data(), pr.lse.data());
}

}  // namespace

nlohmann::json run_kernel_bench(const KernelBenchRequest& o) {
  const std::unique_ptr<Problem> pr = make_problem(o);
  if (o.backend == "cuda") return bench_cuda(o, pr->p);
  // The backward's inputs o and lse: the forward's, once, untimed.
  if (o.backward) attention_forward(pr->p, pr->out.data(), pr->lse.data());
  // Peaks before and after the timed runs; the larger is the yardstick.
  const FmaPeak peak_before = measure_fma_peak(pr->threads);
  const FmaPeak dot_before = measure_bf16_dot_peak(pr->threads);
  const FmaPeak amx_before = measure_amx_bf16_peak(pr->threads);
  for (int i = 0; i < o.warmup; ++i) run_pass(o, *pr);
  std::vector<double> secs;
  for (int i = 0; i < o.reps; ++i) {
    Timer t;
    run_pass(o, *pr);
    secs.push_back(t.seconds());
  }
  const FmaPeak peak_after = measure_fma_peak(pr->threads);
  const FmaPeak dot_after = measure_bf16_dot_peak(pr->threads);
  const FmaPeak amx_after = measure_amx_bf16_peak(pr->threads);
  return record(o, *pr, secs, {std::max(peak_before.gflops, peak_after.gflops), peak_before.isa},
                {std::max(dot_before.gflops, dot_after.gflops), dot_before.isa},
                {std::max(amx_before.gflops, amx_after.gflops), amx_before.isa});
}

}  // namespace ringattn
