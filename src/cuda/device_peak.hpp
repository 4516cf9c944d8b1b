// The dense f16/bf16 tensor-core peak of a GPU (fp32 accumulation, no
// sparsity): the yardstick `ringattn bench kernel --backend cuda` measures its
// TFLOP/s against. Plain C++ (no CUDA headers): the caller passes what
// cudaGetDeviceProperties reported, so it is tested on machines without a GPU.
#pragma once

#include <string>

namespace ringattn::cuda {

struct DevicePeak {
  bool known = false;  // false: "unknown", tflops = 0
  double tflops = 0;   // dense f16/bf16 tensor-core TFLOP/s
  std::string source;  // "vendor datasheet (H100 SXM)", an estimate's basis, or "unknown"
};

// By name first (datasheet figures for the parts listed in device_peak.cpp),
// else an estimate from the compute capability's tensor-core rate per SM and
// clock times sm_count and clock_mhz (when both are > 0), else unknown.
DevicePeak dense_tensor_peak(const std::string& name, int cc_major, int cc_minor, int sm_count,
                             double clock_mhz);

// Dense f16/bf16 flops per SM per clock of a compute capability (0 if unknown).
double tensor_flops_per_sm_clock(int cc_major, int cc_minor);

}  // namespace ringattn::cuda
