// The kernel against the float64 reference on small built-in problems (plain,
// causal, GQA, cross-attention, f16/bf16 storage, bf16 compute, zigzag and
// striped shards): what `ringattn selfcheck` runs on a new machine.
//
// Includes: <string>, <vector>.
#pragma once

#include <string>
#include <vector>

namespace ringattn {

struct SelfcheckCase {
  std::string name;
  double o_err = 0;    // max |o - ref| / max |ref|
  double lse_err = 0;  // max |lse - ref| / max(1, max |ref|)
  double tolerance = 0;
  bool ok = false;
};

struct SelfcheckReport {
  std::vector<SelfcheckCase> cases;
  std::string kernel;  // the implementation that ran (kernel_implementation)
  int failures() const;
};

// threads <= 0: this rank's share of the cores.
SelfcheckReport run_selfcheck(int threads);

}  // namespace ringattn
