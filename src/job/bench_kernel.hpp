// Timing the fused attention kernel on a seeded problem (`ringattn bench
// kernel`). CPU: the median of `reps` runs against the machine's FMA peak,
// measured before and after in the same run (the larger is the yardstick).
// On CPUs with AVX512_BF16 a vdpbf16ps peak is measured the same way, the
// yardstick of a bf16 run on the dot path, and on CPUs with AMX-BF16 a
// tdpbf16ps peak, the amx path's. CUDA: CUDA events against the GPU's dense f16/bf16
// tensor-core peak (cuda/device_peak.hpp). With `backward`, the CPU backward
// (attention_backward: GradState reset, fold, finish) is timed instead, on a
// seeded dO and the forward's o and lse (computed once, untimed), its flops
// 2.5x the forward's (attention_backward_flops). The result is one JSON
// record (what --json prints; the text form is drawn from it), so the fields
// are named once; its "pass" says forward or backward.
//
// Includes: <cstdint>, <string>, <nlohmann/json.hpp>.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace ringattn {

struct KernelBenchRequest {
  std::int64_t n = 4096, n_kv = 0, d = 128, heads = 4, kv_heads = 0, batch = 1;  // 0: as n, heads
  std::string dtype = "f32", compute = "f32", backend = "cpu";
  std::string tiles = "native", vector_path = "native";  // the CPU kernel's variant
  std::string bf16_products = "native";                  // native, dot or fp32 (compute bf16)
  std::string window = "none";                           // Window's text form
  int threads = 0, reps = 5, warmup = 1;                 // threads 0: this rank's share
  bool causal = false;
  bool backward = false;  // time the backward pass (CPU, compute f32)
  std::uint64_t seed = 1;
};

// Throws Error(usage) for a backend or vector path this machine cannot run,
// and for a backward the kernel has not (bf16 compute, CUDA), before
// anything is allocated or timed.
nlohmann::json run_kernel_bench(const KernelBenchRequest& req);

}  // namespace ringattn
