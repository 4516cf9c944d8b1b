// What a finished run's output says it computed, read from its attributes
// (causal, window, scale, compute, the dataset names, o's type, lse and
// gradients), and the check that its datasets are shaped for an input: what
// `verify` and `weights` recompute from.
//
// Includes: <cstdint>, <string>, core/dtype.hpp, core/shape.hpp,
// core/visibility.hpp (Window), io/h5_describe.hpp (H5FileDesc),
// io/input_file.hpp (InputNames).
#pragma once

#include <cstdint>
#include <string>

#include "core/dtype.hpp"
#include "core/shape.hpp"
#include "core/visibility.hpp"
#include "io/h5_describe.hpp"
#include "io/input_file.hpp"

namespace ringattn {

struct RunFacts {
  bool causal = false;
  Window window;               // "none" when the output predates windows
  std::int64_t documents = 0;  // packed sequences the run saw (0: not recorded)
  float scale = 0;             // the kernel's float scale, stored as double
  std::string compute;
  InputNames names;
  DType o_dtype = DType::f32;
  bool has_lse = false;
  bool gradients = false;  // a backward run: dq, dk, dv written
  std::string do_name;     // the input's dO it read (do_dataset)
};

// Throws Error(input) naming the file and the attribute when the output is
// not a complete output of ringattn run.
RunFacts read_facts(const H5FileDesc& d);

// Throws Error(input) unless the output's datasets are shaped for an input
// of shape s.
void check_shapes(const H5FileDesc& od, const RunFacts& run, const AttnShape& s);

}  // namespace ringattn
