// What this build is and what it found on this machine: the version, the CPU
// kernel's vector ISA and libxsmm target, the cores, CUDA (`--version`).
//
// Includes: <string>.
#pragma once

#include <string>

namespace ringattn {

std::string build_info_text();

}  // namespace ringattn
