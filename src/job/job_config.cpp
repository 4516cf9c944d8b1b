// Visitors of the settings table (see job_config.hpp): the checks of a
// filled struct and its JSON forms.
#include "job/job_config.hpp"

#include <nlohmann/json.hpp>

#include "core/error.hpp"

namespace ringattn {
namespace {

// A setting's value in JSON: numbers and bools as such, enums by name.
template <class T>
nlohmann::json json_value(const T& v) {
  if constexpr (std::is_same_v<T, float>)
    return static_cast<double>(v);
  else if constexpr (std::is_arithmetic_v<T> || std::is_same_v<T, std::string>)
    return v;
  else
    return choice_name(v);
}

// What a setting recorded with a result holds: what an "auto" resolved to.
template <class S>
nlohmann::json recorded_value(const JobConfig& c, const S& s) {
  return s.resolved ? nlohmann::json(s.resolved(c)) : json_value(c.*s.member);
}

}  // namespace

void check_job_config(const JobConfig& cfg) {
  for_each_setting([&](const auto& s) { check_value(cfg, s); });
  RA_CHECK(!cfg.input.empty(), usage, "no input file given (--input or [input] path)");
  RA_CHECK(!cfg.output.empty(), usage, "no output file given (--output or [output] path)");
  RA_CHECK(cfg.effective_transport() != TransportKind::nccl || cfg.backend == Backend::cuda, usage,
           "--transport nccl moves device buffers: it needs --backend cuda");
}

std::string settings_json(const JobConfig& cfg) {
  nlohmann::json j = nlohmann::json::object();
  for_each_setting([&](const auto& s) { j[s.section][s.key] = recorded_value(cfg, s); });
  return j.dump();
}

std::string result_settings_json(const JobConfig& cfg) {
  nlohmann::json j = nlohmann::json::object();
  for_each_setting([&](const auto& s) {
    if (s.result) j[s.resume_name ? s.resume_name : s.key] = recorded_value(cfg, s);
  });
  return j.dump();
}

}  // namespace ringattn
