// The machine's own fp32 FMA throughput, measured: the yardstick benchmarks
// divide by (fraction_of_peak), taken in the same run as the figure it judges.
#pragma once

#include <string>

namespace ringattn {

struct FmaPeak {
  double gflops = 0;  // summed over threads, all running at once
  int threads = 0;
  std::string isa;  // the vector width measured: "avx512", "avx2" or "generic"
};

// Runs `threads` threads at once, each doing independent FMA chains (12
// accumulators: enough to cover FMA latency x issue width on current cores)
// for about `seconds`, with the widest ISA the kernels use on this CPU.
FmaPeak measure_fma_peak(int threads, double seconds = 0.25);

// The same for bf16 dot products (vdpbf16ps: 16 lanes x 2 pairs x 2 flops),
// the bf16 kernel's yardstick. gflops 0 and isa "none" where the CPU has no
// AVX512_BF16.
FmaPeak measure_bf16_dot_peak(int threads, double seconds = 0.25);

// The same for AMX tiles (tdpbf16ps), the amx products' yardstick: gflops 0
// and isa "none" where the CPU has no usable AMX-BF16.
FmaPeak measure_amx_bf16_peak(int threads, double seconds = 0.25);

}  // namespace ringattn
