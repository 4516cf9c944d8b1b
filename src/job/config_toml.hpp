// TOML run configurations (configs/*.toml) into a JobConfig, and back
// (--print-config), both driven by the settings table (job_config.hpp). Every
// key is checked: an unknown section or key (a typo), a wrong type or a value
// the setting's check refuses is an Error(usage) naming the file and the key,
// in the words a flag with that value would get.
//
// Includes: job/job_config.hpp (JobConfig).
#pragma once

#include <string>

#include "job/job_config.hpp"

namespace ringattn {

// Applies the keys set in `path` on top of `cfg`.
void load_config_file(const std::string& path, JobConfig& cfg);
// The same for TOML text (a service's job request); `where` names it in messages.
void load_config_text(const std::string& text, const std::string& where, JobConfig& cfg);

// Every setting as TOML, in the table's order and schema: loading it back
// gives the same JobConfig.
std::string config_toml(const JobConfig& cfg);

}  // namespace ringattn
