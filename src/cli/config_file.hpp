// TOML run configurations (configs/*.toml) into a JobConfig. Every key is
// checked: an unknown key (a typo), a wrong type or an out-of-range value is
// an Error(usage) naming the file and the key.
#pragma once

#include <string>

#include "job/job_config.hpp"

namespace ringattn::cli {

// Applies the keys set in `path` on top of `cfg`.
void load_config_file(const std::string& path, JobConfig& cfg);

// The effective configuration as TOML, in the same schema (--print-config).
std::string config_toml(const JobConfig& cfg);

}  // namespace ringattn::cli
