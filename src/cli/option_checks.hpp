// Checks for the subcommands' own numeric flags (the job's settings are
// checked by job/setting.cpp's table). CLI11's stock validators print their
// bounds as %f, so "positive" reads as a range up to a 309-digit number; these
// say what is wanted, once, in words: "--n: must be > 0, got 0".
#pragma once

#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "job/setting.hpp"

namespace ringattn::cli {

namespace option_checks_detail {

// The number a flag's text holds, if all of it is one (the settings' parse).
inline bool parse_number(const std::string& text, long double& out) {
  const auto v = number_in_text(text);
  if (!v || !std::isfinite(*v)) return false;
  out = *v;
  return true;
}

inline CLI::Validator compare(const std::string& what, bool (*ok)(long double)) {
  return CLI::Validator(
      [what, ok](std::string& text) -> std::string {
        long double x = 0;
        if (!parse_number(text, x)) return "must be a number " + what + ", got '" + text + "'";
        return ok(x) ? std::string() : "must be " + what + ", got " + text;
      },
      "", what);
}

}  // namespace option_checks_detail

// > 0 (counts, sizes, amplitudes).
inline CLI::Validator positive() {
  return option_checks_detail::compare("> 0", [](long double x) { return x > 0; });
}

// >= 0.
inline CLI::Validator non_negative() {
  return option_checks_detail::compare(">= 0", [](long double x) { return x >= 0; });
}

// An integer in lo..hi.
inline CLI::Validator integer_in(std::int64_t lo, std::int64_t hi) {
  const std::string range = std::to_string(lo) + ".." + std::to_string(hi);
  return CLI::Validator(
      [lo, hi, range](std::string& text) -> std::string {
        long double x = 0;
        if (!option_checks_detail::parse_number(text, x) || x != std::floor(x))
          return "must be an integer in " + range + ", got '" + text + "'";
        if (x < static_cast<long double>(lo) || x > static_cast<long double>(hi))
          return "must be in " + range + ", got " + text;
        return {};
      },
      "", "in " + range);
}

// A flag that takes one of the words given, its metavar "a|b|c" (CLI11's
// own would read TEXT:{a,b,c}) and the value's initial text its default.
inline CLI::Option* add_choice(CLI::App& app, const std::string& flag, std::string& value,
                               const std::vector<std::string>& words, const std::string& help) {
  std::string bar;
  for (const std::string& w : words) bar += (bar.empty() ? "" : "|") + w;
  CLI::Validator member = CLI::IsMember(words);
  member.description("");
  return app.add_option(flag, value, help)->capture_default_str()->check(member)->type_name(bar);
}

}  // namespace ringattn::cli
