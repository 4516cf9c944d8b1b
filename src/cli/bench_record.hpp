// What the bench subcommands (bench kernel, bench ring) share about their
// engine's JSON record: reading its fields for the text report, and printing
// it as --json asks.
#pragma once

#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>

namespace ringattn::cli {

// A bench subcommand's flags: the engine's request, and --json.
template <class Request>
struct BenchOptions {
  Request req;
  bool json = false;
};

// The record's field readers for a text report, bound as
// `const auto [i, d, s] = record_fields(j);`: i an integer (as printf's %lld
// takes it), d a double, s a string. j must outlive them.
inline auto record_fields(const nlohmann::json& j) {
  return std::tuple{
      [&j](const char* k) { return static_cast<long long>(j.at(k).get<std::int64_t>()); },
      [&j](const char* k) { return j.at(k).get<double>(); },
      [&j](const char* k) { return j.at(k).get<std::string>(); }};
}

// The record as one line of JSON (as_json), else through its text report.
inline void print_record(const nlohmann::json& j, bool as_json,
                         void (*print_text)(const nlohmann::json&)) {
  if (as_json)
    std::printf("%s\n", j.dump().c_str());
  else
    print_text(j);
}

}  // namespace ringattn::cli
