// `ringattn bench kernel`: binds the flags to a KernelBenchRequest, runs the
// engine (job/bench_kernel.hpp) and prints its record: one JSON object with
// --json, else text. --tiles and --vector-path pick the CPU kernel's compiled
// variant, so any machine can time the tile shape tuned for another ISA (the
// tests check every shape's accuracy the same way). --backward times the
// CPU backward instead (dQ, dK, dV from the forward's o and lse).
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/bench_record.hpp"
#include "cli/commands.hpp"
#include "cli/option_checks.hpp"
#include "core/shape.hpp"
#include "job/bench_kernel.hpp"

namespace ringattn::cli {
namespace {

using BenchKernelOptions = BenchOptions<KernelBenchRequest>;

void print_text(const nlohmann::json& j) {
  const auto [i, d, s] = record_fields(j);
  const bool causal = j.at("causal").get<bool>();
  std::printf("kernel %s\n", s("implementation").c_str());
  if (s("pass") == "backward")
    std::printf(
        "pass   backward: dQ, dK, dV from a seeded dO and the forward's o, lse "
        "(flops 2.5x the forward's)\n");
  if (s("backend") == "cuda") {
    std::printf("device %s (sm_%s, %lld SMs)\n", s("device").c_str(),
                s("compute_capability").c_str(), i("sm_count"));
    std::printf("shape  B=%lld H=%lld/%lld N=%lld N_kv=%lld D=%lld %s %s\n", i("batch"), i("heads"),
                i("kv_heads"), i("n"), i("n_kv"), i("d"), s("dtype").c_str(),
                causal ? "causal" : "non-causal");
    std::printf("time   %.6f s (median of %lld, CUDA events)\n", d("seconds"), i("reps"));
    if (!j.at("peak_tflops").is_null())
      std::printf(
          "speed  %.1f TFLOP/s = %.3f of the %.1f TFLOP/s dense f16/bf16 tensor peak (%s)\n",
          d("tflops"), d("fraction_of_peak"), d("peak_tflops"), s("peak_source").c_str());
    else
      std::printf("speed  %.1f TFLOP/s (tensor-core peak of this device unknown)\n", d("tflops"));
    return;
  }
  std::printf("shape  B=%lld H=%lld/%lld N=%lld N_kv=%lld D=%lld %s %s, %lld threads\n", i("batch"),
              i("heads"), i("kv_heads"), i("n"), i("n_kv"), i("d"), s("dtype").c_str(),
              causal ? "causal" : "non-causal", i("threads"));
  std::printf("time   %.4f s (median of %lld)\n", d("seconds"), i("reps"));
  std::printf("speed  %.1f GFLOP/s = %.3f of the %.1f GFLOP/s %s FMA peak\n", d("gflops"),
              d("fraction_of_peak"), d("peak_gflops"), s("peak_isa").c_str());
  if (!j.at("fraction_of_bf16_peak").is_null())
    std::printf("       = %.3f of the %.1f GFLOP/s bf16 dot (vdpbf16ps) peak\n",
                d("fraction_of_bf16_peak"), d("bf16_peak_gflops"));
  if (!j.at("fraction_of_amx_peak").is_null())
    std::printf("       = %.3f of the %.1f GFLOP/s AMX (tdpbf16ps) peak\n",
                d("fraction_of_amx_peak"), d("amx_peak_gflops"));
}

int run(const BenchKernelOptions& o) {
  print_record(run_kernel_bench(o.req), o.json, print_text);
  return kOk;
}

// Timing, seed and masking.
void add_timing_and_mask_options(CLI::App& c, BenchKernelOptions& o) {
  c.add_option("--reps", o.req.reps, "Timed runs (the median is reported)")
      ->capture_default_str()
      ->check(positive());
  c.add_option("--warmup", o.req.warmup, "Untimed runs first")
      ->capture_default_str()
      ->check(non_negative());
  c.add_option("--seed", o.req.seed, "Seed of the synthetic Q, K, V")->capture_default_str();
  c.add_flag("--causal", o.req.causal, "Causal masking (key j visible to query i when j <= i)");
  c.add_option("--window", o.req.window,
               "Attention window L[,R] as run's --window (none: every key); flops count the "
               "visible pairs only")
      ->capture_default_str();
}

// Which kernel, which code path, which pass; the report's form.
void add_path_options(CLI::App& c, BenchKernelOptions& o) {
  add_choice(c, "--backend", o.req.backend, {"cpu", "cuda"},
             "cpu: the CPU kernel against the FMA peak; cuda: the device kernel (CUDA events) "
             "against the GPU's dense f16/bf16 tensor-core peak (exit code 2 without a device)");
  add_choice(c, "--tiles", o.req.tiles, {"native", "avx2", "avx512"},
             "CPU kernel's tile shape (--backend cpu): native (the shape tuned for this CPU's "
             "widest ISA), "
             "avx2 or avx512 (the shape tuned for that ISA; any CPU runs any shape). The "
             "kernel line of the report shows its bq x bk");
  add_choice(c, "--vector-path", o.req.vector_path, {"native", "avx512", "avx2", "generic"},
             "CPU kernel's vector code (--backend cpu; softmax step, compensated sums): native "
             "(the widest "
             "this CPU runs), avx512, avx2 or generic; one this CPU cannot run is refused "
             "(exit code 2)");
  add_choice(c, "--bf16-products", o.req.bf16_products, {"native", "amx", "dot", "fp32"},
             "How --compute bf16 multiplies (--backend cpu): native (amx where the CPU has "
             "AMX-BF16, else dot where it has AVX512_BF16, else fp32), amx (AMX tiles, "
             "tdpbf16ps, into fp32 tiles; products whose dims are not multiples of 32 take "
             "dot's kernels; refused, exit code 2, without AMX-BF16), dot (vdpbf16ps into "
             "fp32 accumulators; refused, exit code 2, without AVX512_BF16) or fp32 "
             "(widened, fp32 speed). The kernel line shows products=...");
  c.add_flag("--backward", o.req.backward,
             "Time the backward pass instead (GradState reset, fold, finish: dQ, dK, dV from a "
             "seeded dO and the forward's o and lse, computed once untimed); flops 2.5x the "
             "forward's, against the same FMA peak. CPU and --compute f32 only (else exit "
             "code 2); its tile shape is its own (--tiles does not apply)");
  c.add_flag("--json", o.json,
             "Print one JSON object instead of text (\"pass\": \"forward\" or \"backward\")");
}

}  // namespace

std::function<int()> add_bench_kernel(CLI::App& bench) {
  auto opts = std::make_shared<BenchKernelOptions>();
  CLI::App* c = bench.add_subcommand(
      "kernel",
      "Time the fused attention kernel on seeded data. --backend cpu: GFLOP/s against the "
      "machine's fp32 FMA peak, measured in the same run (and against the vdpbf16ps or AMX "
      "tdpbf16ps peak for --compute bf16 on those paths); --backend cuda: TFLOP/s against the "
      "GPU's dense f16/bf16 tensor-core peak. flops = 4*N*N_kv*D*H*B (causal: visible pairs "
      "only, about half); --backward: the CPU backward, 2.5x that.");
  c->add_option("--n", opts->req.n, "Query tokens")->capture_default_str()->check(positive());
  c->add_option("--n-kv", opts->req.n_kv,
                "Key/value tokens (default: --n; differs for cross-attention)")
      ->check(positive());
  c->add_option("--d", opts->req.d, "Head dim (1.." + std::to_string(kMaxHeadDim) + ")")
      ->capture_default_str()
      ->check(integer_in(1, kMaxHeadDim));
  c->add_option("--heads", opts->req.heads, "Query heads")
      ->capture_default_str()
      ->check(positive());
  c->add_option("--kv-heads", opts->req.kv_heads,
                "Key/value heads, dividing --heads (default: --heads)")
      ->check(positive());
  c->add_option("--batch", opts->req.batch, "Batch size")->capture_default_str()->check(positive());
  add_choice(*c, "--dtype", opts->req.dtype, {"f32", "f16", "bf16"}, "Storage type of Q, K, V");
  add_choice(*c, "--compute", opts->req.compute, {"f32", "bf16"},
             "Tile-product precision: f32, or bf16 (Q, K, V and probabilities rounded to "
             "bf16, fp32 accumulation; multiplied on AMX tiles where the CPU has AMX-BF16, "
             "by bf16 dot products where it has AVX512_BF16, else in fp32: see "
             "--bf16-products)");
  c->add_option("--threads", opts->req.threads,
                "Threads (default: this rank's share of the cores it may run on)")
      ->check(positive());
  add_timing_and_mask_options(*c, *opts);
  add_path_options(*c, *opts);
  return [opts] { return run(*opts); };
}

}  // namespace ringattn::cli
