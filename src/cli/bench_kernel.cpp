// `ringattn bench kernel`: times the fused attention kernel on a seeded
// problem. --backend cpu (default): the CPU kernel, judged against the
// machine's FMA peak measured in the same run. --backend cuda: the device
// kernel, timed with CUDA events and judged against the GPU's dense f16/bf16
// tensor-core peak (cuda/device_peak.hpp). --tiles and --vector-path pick the
// CPU kernel's compiled variant, so any machine can time the tile shape tuned
// for another ISA (the tests check every shape's accuracy the same way).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/option_checks.hpp"
#include "core/aligned_buffer.hpp"
#include "core/cpu.hpp"
#include "core/error.hpp"
#include "core/fma_peak.hpp"
#include "core/seeded_data.hpp"
#include "core/shape.hpp"
#include "core/timer.hpp"
#include "core/version.hpp"
#include "cuda/attention_cuda.hpp"
#include "cuda/device.hpp"
#include "cuda/device_peak.hpp"
#include "kernel/attention.hpp"
#include "kernel/softmax_tile.hpp"

namespace ringattn::cli {
namespace {

struct BenchKernelOptions {
  std::int64_t n = 4096, n_kv = 0, d = 128, heads = 4, kv_heads = 0, batch = 1;
  std::string dtype = "f32", compute = "f32", backend = "cpu";
  std::string tiles = "native", vector_path = "native";  // the CPU kernel's variant
  int threads = 0, reps = 5, warmup = 1;
  bool causal = false, json = false;
  std::uint64_t seed = 1;
};

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

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The device kernel on the same problem: p points at host tensors, which
// time_attention_forward copies to the device once.
int run_cuda(const BenchKernelOptions& o, const AttnParams& p) {
  const cuda::DeviceInfo dev = cuda::current_device_info();
  const cuda::DevicePeak peak =
      cuda::dense_tensor_peak(dev.name, dev.cc_major, dev.cc_minor, dev.sm_count, dev.clock_mhz);
  const std::vector<double> secs = cuda::time_attention_forward(p, o.warmup, o.reps);
  const double flops = attention_flops(p);
  const double sec = median(secs);
  const double tflops = flops / sec / 1e12;
  const std::string impl = cuda::kernel_implementation(p);
  nlohmann::json j = {
      {"benchmark", "kernel"},
      {"backend", "cuda"},
      {"version", kVersion},
      {"implementation", impl},
      {"device", dev.name},
      {"compute_capability", std::to_string(dev.cc_major) + "." + std::to_string(dev.cc_minor)},
      {"batch", o.batch},
      {"n", o.n},
      {"n_kv", p.n_kv},
      {"d", o.d},
      {"heads", o.heads},
      {"kv_heads", p.heads_kv},
      {"dtype", dtype_name(p.dtype)},
      {"compute", compute_type_name(p.compute)},
      {"causal", o.causal},
      {"reps", o.reps},
      {"seconds", sec},
      {"seconds_min", *std::min_element(secs.begin(), secs.end())},
      {"flops", flops},
      {"tflops", tflops},
      {"peak_tflops", peak.known ? nlohmann::json(peak.tflops) : nlohmann::json(nullptr)},
      {"peak_source", peak.source},
      {"fraction_of_peak",
       peak.known ? nlohmann::json(tflops / peak.tflops) : nlohmann::json(nullptr)},
  };
  if (o.json) {
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("kernel %s\n", impl.c_str());
    std::printf("device %s (sm_%d%d, %d SMs)\n", dev.name.c_str(), dev.cc_major, dev.cc_minor,
                dev.sm_count);
    std::printf("shape  B=%lld H=%lld/%lld N=%lld N_kv=%lld D=%lld %s %s\n",
                static_cast<long long>(o.batch), static_cast<long long>(o.heads),
                static_cast<long long>(p.heads_kv), static_cast<long long>(o.n),
                static_cast<long long>(p.n_kv), static_cast<long long>(o.d), dtype_name(p.dtype),
                o.causal ? "causal" : "non-causal");
    std::printf("time   %.6f s (median of %d, CUDA events)\n", sec, o.reps);
    if (peak.known)
      std::printf(
          "speed  %.1f TFLOP/s = %.3f of the %.1f TFLOP/s dense f16/bf16 tensor peak (%s)\n",
          tflops, tflops / peak.tflops, peak.tflops, peak.source.c_str());
    else
      std::printf("speed  %.1f TFLOP/s (tensor-core peak of this device unknown)\n", tflops);
  }
  return kOk;
}

// The problem a run times: seeded inputs and the kernel's parameters.
struct Problem {
  std::int64_t n_kv = 0, kv_heads = 0;
  int threads = 1;
  DType dt = DType::f32;
  CpuVariant variant;
  AlignedBuffer<char> q, k, v;
  AlignedBuffer<float> out, lse;
  AttnParams p;
};

std::unique_ptr<Problem> make_problem(const BenchKernelOptions& o) {
  RA_CHECK(o.backend != "cuda" || cuda_device_count() > 0, usage,
           "bench kernel --backend cuda: no CUDA device (", cuda_summary(), ")");
  auto pr = std::make_unique<Problem>();
  pr->n_kv = o.n_kv > 0 ? o.n_kv : o.n;
  pr->kv_heads = o.kv_heads > 0 ? o.kv_heads : o.heads;
  pr->threads = o.threads > 0 ? o.threads : default_threads();
  pr->dt = parse_dtype(o.dtype);
  // The CPU kernel's variant (the device kernel has its own shapes).
  pr->variant = o.backend == "cpu"
                    ? CpuVariant{tile_shape_of(o.tiles), vector_isa_of(o.vector_path)}
                    : CpuVariant{};
  // Refused before anything is allocated or timed: the path would fault here.
  RA_CHECK(cpu_runs(pr->variant.isa), usage, "bench kernel --vector-path ", o.vector_path,
           ": this CPU cannot run it (widest here: ",
           vector_isa_name(resolve_isa(VectorIsa::native)), ")");
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
  p.threads = pr->threads;
  p.compute = parse_compute_type(o.compute.c_str());
  p.cpu = pr->variant;
  p.validate();
  pr->out.resize(qn);
  pr->lse.resize(static_cast<std::size_t>(o.batch * o.heads * o.n));
  return pr;
}

void print_result(const BenchKernelOptions& o, const Problem& pr, const std::vector<double>& secs,
                  const FmaPeak& peak_before, double peak) {
  const AttnParams& p = pr.p;
  const double flops = attention_flops(p);
  const double sec = median(secs);
  const double gflops = flops / sec / 1e9;
  if (o.json) {
    const nlohmann::json j = {
        {"benchmark", "kernel"},
        {"version", kVersion},
        {"implementation", kernel_implementation(p)},
        {"tiles", o.tiles},
        {"vector_path", vector_isa_name(resolve_isa(pr.variant.isa))},
        {"batch", o.batch},
        {"n", o.n},
        {"n_kv", pr.n_kv},
        {"d", o.d},
        {"heads", o.heads},
        {"kv_heads", pr.kv_heads},
        {"dtype", dtype_name(pr.dt)},
        {"compute", compute_type_name(p.compute)},
        {"causal", o.causal},
        {"threads", pr.threads},
        {"reps", o.reps},
        {"seconds", sec},
        {"seconds_min", *std::min_element(secs.begin(), secs.end())},
        {"flops", flops},
        {"gflops", gflops},
        {"peak_gflops", peak},
        {"peak_isa", peak_before.isa},
        {"fraction_of_peak", gflops / peak},
    };
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("kernel %s\n", kernel_implementation(p).c_str());
  std::printf("shape  B=%lld H=%lld/%lld N=%lld N_kv=%lld D=%lld %s %s, %d threads\n",
              static_cast<long long>(o.batch), static_cast<long long>(o.heads),
              static_cast<long long>(pr.kv_heads), static_cast<long long>(o.n),
              static_cast<long long>(pr.n_kv), static_cast<long long>(o.d), dtype_name(pr.dt),
              o.causal ? "causal" : "non-causal", pr.threads);
  std::printf("time   %.4f s (median of %d)\n", sec, o.reps);
  std::printf("speed  %.1f GFLOP/s = %.3f of the %.1f GFLOP/s %s FMA peak\n", gflops, gflops / peak,
              peak, peak_before.isa.c_str());
}

int run(const BenchKernelOptions& o) {
  const std::unique_ptr<Problem> pr = make_problem(o);
  if (o.backend == "cuda") return run_cuda(o, pr->p);
  // Peak before and after the timed runs; the larger is the yardstick.
  const FmaPeak peak_before = measure_fma_peak(pr->threads);
  for (int i = 0; i < o.warmup; ++i) attention_forward(pr->p, pr->out.data(), pr->lse.data());
  std::vector<double> secs;
  for (int i = 0; i < o.reps; ++i) {
    Timer t;
    attention_forward(pr->p, pr->out.data(), pr->lse.data());
    secs.push_back(t.seconds());
  }
  const FmaPeak peak_after = measure_fma_peak(pr->threads);
  print_result(o, *pr, secs, peak_before, std::max(peak_before.gflops, peak_after.gflops));
  return kOk;
}

}  // namespace

std::function<int()> add_bench_kernel(CLI::App& bench) {
  auto opts = std::make_shared<BenchKernelOptions>();
  CLI::App* c = bench.add_subcommand(
      "kernel",
      "Time the fused attention kernel on seeded data. --backend cpu: GFLOP/s against the "
      "machine's fp32 FMA peak, measured in the same run; --backend cuda: TFLOP/s against the "
      "GPU's dense f16/bf16 tensor-core peak. flops = 4*N*N_kv*D*H*B (causal: visible pairs "
      "only, about half).");
  c->add_option("--n", opts->n, "Query tokens")->capture_default_str()->check(positive());
  c->add_option("--n-kv", opts->n_kv,
                "Key/value tokens (default: --n; differs for cross-attention)")
      ->check(positive());
  c->add_option("--d", opts->d, "Head dim (1.." + std::to_string(kMaxHeadDim) + ")")
      ->capture_default_str()
      ->check(integer_in(1, kMaxHeadDim));
  c->add_option("--heads", opts->heads, "Query heads")->capture_default_str()->check(positive());
  c->add_option("--kv-heads", opts->kv_heads,
                "Key/value heads, dividing --heads (default: --heads)")
      ->check(positive());
  c->add_option("--batch", opts->batch, "Batch size")->capture_default_str()->check(positive());
  c->add_option("--dtype", opts->dtype, "Storage type of Q, K, V")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
  c->add_option("--compute", opts->compute,
                "Tile-product precision: f32, or bf16 (Q, K, V and probabilities rounded to "
                "bf16, fp32 accumulation; the rounding is applied to fp32 products, so it shows "
                "bf16 accuracy, not bf16 speed)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16"}));
  c->add_option("--threads", opts->threads,
                "Threads (default: this rank's share of the cores it may run on)")
      ->check(positive());
  c->add_option("--reps", opts->reps, "Timed runs (the median is reported)")
      ->capture_default_str()
      ->check(positive());
  c->add_option("--warmup", opts->warmup, "Untimed runs first")
      ->capture_default_str()
      ->check(non_negative());
  c->add_option("--seed", opts->seed, "Seed of the synthetic Q, K, V")->capture_default_str();
  c->add_flag("--causal", opts->causal, "Causal masking (key j visible to query i when j <= i)");
  c->add_option("--backend", opts->backend,
                "cpu: the CPU kernel against the FMA peak; cuda: the device kernel (CUDA events) "
                "against the GPU's dense f16/bf16 tensor-core peak (exit code 2 without a device)")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda"}));
  c->add_option("--tiles", opts->tiles,
                "CPU kernel's tile shape (--backend cpu): native (the shape tuned for this CPU's "
                "widest ISA), "
                "avx2 or avx512 (the shape tuned for that ISA; any CPU runs any shape). The "
                "kernel line of the report shows its bq x bk")
      ->capture_default_str()
      ->check(CLI::IsMember({"native", "avx2", "avx512"}));
  c->add_option("--vector-path", opts->vector_path,
                "CPU kernel's vector code (--backend cpu; softmax step, compensated sums): native "
                "(the widest "
                "this CPU runs), avx512, avx2 or generic; one this CPU cannot run is refused "
                "(exit code 2)")
      ->capture_default_str()
      ->check(CLI::IsMember({"native", "avx512", "avx2", "generic"}));
  c->add_flag("--json", opts->json, "Print one JSON object instead of text");
  return [opts] { return run(*opts); };
}

}  // namespace ringattn::cli
