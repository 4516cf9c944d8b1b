// Dense f16/bf16 tensor-core peaks (see device_peak.hpp).
//
// Figures: vendor datasheet (NVIDIA's product datasheets for each part; the
// datasheets quote "with sparsity" figures, the dense figure is half of
// those). All are for fp32 accumulation at the boost clock.
#include "cuda/device_peak.hpp"

#include <cstdio>

namespace ringattn::cuda {
namespace {

struct KnownPart {
  const char* match;  // substring of cudaDeviceProp::name
  const char* label;
  double tflops;
};

// Order matters: the first match wins, so specific names precede general ones.
constexpr KnownPart kParts[] = {
    {"GH200", "GH200", 989.4},
    {"H200 NVL", "H200 NVL", 835.0},
    {"H200", "H200 SXM", 989.4},
    {"H100 NVL", "H100 NVL", 835.0},
    {"H100 PCIe", "H100 PCIe", 756.0},
    {"H100", "H100 SXM", 989.4},  // "NVIDIA H100 80GB HBM3"
    {"H800 PCIe", "H800 PCIe", 756.0},
    {"H800", "H800 SXM", 989.4},
    {"A100", "A100", 312.0},  // SXM and PCIe alike
    {"A800", "A800", 312.0},
    {"A30", "A30", 165.0},
    {"A40", "A40", 149.7},
    {"A10", "A10", 125.0},  // after A100 and A40
    {"L40S", "L40S", 362.0},
    {"L40", "L40", 181.0},
    {"L4", "L4", 121.0},  // after L40S and L40
};

}  // namespace

double tensor_flops_per_sm_clock(int cc_major, int cc_minor) {
  // 2 flops per FMA; dense f16 FMAs per SM per clock of each generation's
  // tensor cores (A100: 108 SMs x 1410 MHz x 2048 = 312 TFLOP/s; H100 SXM:
  // 132 x 1830 MHz x 4096 = 989 TFLOP/s).
  if (cc_major == 8 && cc_minor == 0) return 2048;
  if (cc_major == 8) return 1024;  // sm_86, sm_87, sm_89
  if (cc_major == 9) return 4096;
  return 0;
}

DevicePeak dense_tensor_peak(const std::string& name, int cc_major, int cc_minor, int sm_count,
                             double clock_mhz) {
  DevicePeak p;
  for (const KnownPart& k : kParts)
    if (name.find(k.match) != std::string::npos) {
      p.known = true;
      p.tflops = k.tflops;
      p.source = std::string("vendor datasheet (") + k.label + ")";
      return p;
    }
  const double rate = tensor_flops_per_sm_clock(cc_major, cc_minor);
  if (rate > 0 && sm_count > 0 && clock_mhz > 0) {
    p.known = true;
    p.tflops = rate * sm_count * clock_mhz * 1e6 / 1e12;
    char buf[160];
    std::snprintf(buf, sizeof buf, "estimate: sm_%d%d rate %.0f flop/clk/SM x %d SMs x %.0f MHz",
                  cc_major, cc_minor, rate, sm_count, clock_mhz);
    p.source = buf;
    return p;
  }
  p.source = "unknown";
  return p;
}

}  // namespace ringattn::cuda
