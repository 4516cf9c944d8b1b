// Visitors of the settings table (see job_config.hpp): the checks of a
// filled struct, its JSON forms, and the agreement of the ranks' settings.
#include "job/job_config.hpp"

#include <nlohmann/json.hpp>

#include <climits>
#include <cstdint>

#include "comm/agree.hpp"
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

// What a setting recorded with a result holds, from a config as_run made:
// an "auto" choice left unmade there would record "auto", not what ran.
template <class S>
nlohmann::json recorded_value(const JobConfig& ran, const S& s) {
  const auto& v = ran.*s.member;
  if constexpr (is_optional<std::decay_t<decltype(v)>>::value)
    RA_CHECK(v.has_value(), internal, s.name(),
             " is auto in a config as it ran (JobConfig::as_run)");
  return json_value(v);
}

// FNV-1a: a cheap, stable hash of the canonical text (not a defence against
// anyone: ranks compare their own launch's settings).
std::uint64_t fnv1a(const std::string& text) {
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char ch : text) {
    h ^= ch;
    h *= 1099511628211ull;
  }
  return h;
}

// The first setting whose value here differs from rank 0's canonical JSON,
// as "attention.causal is true on rank 0 but false on rank 3" ("" if none).
std::string first_difference(const nlohmann::ordered_json& root, const JobConfig& cfg, int rank) {
  const nlohmann::ordered_json mine = nlohmann::ordered_json::parse(canonical_settings_json(cfg));
  for (const auto& [name, value] : mine.items()) {
    const auto theirs = root.find(name);
    if (theirs == root.end() || *theirs != value)
      return name + " is " + (theirs == root.end() ? "unset" : theirs->dump()) + " on rank 0 but " +
             value.dump() + " on rank " + std::to_string(rank);
  }
  // Ranks running different builds may know different settings.
  for (const auto& [name, value] : root.items())
    if (!mine.contains(name))
      return name + " is " + value.dump() + " on rank 0 but unset on rank " + std::to_string(rank);
  return "";
}

}  // namespace

void check_job_config(const JobConfig& cfg) {
  for_each_setting([&](const auto& s) { check_value(cfg, s); });
  RA_CHECK(!cfg.input.empty(), usage, "no input file given (--input or [input] path)");
  RA_CHECK(!cfg.output.empty(), usage, "no output file given (--output or [output] path)");
  RA_CHECK(cfg.effective_transport() != TransportKind::nccl || cfg.backend == Backend::cuda, usage,
           "--transport nccl moves device buffers: it needs --backend cuda");
  RA_CHECK(!cfg.reuse_forward || cfg.backward, usage,
           "--reuse-forward reads o and lse for a backward run: it needs --backward");
  RA_CHECK(!cfg.backward || cfg.backend == Backend::cpu, usage,
           "--backward runs on the CPU backend only (no device backward kernel yet)");
  RA_CHECK(!cfg.backward || cfg.compute == ComputeType::f32, usage,
           "--backward computes in f32 only (--compute ", compute_type_name(cfg.compute), ")");
}

void agree_settings(MPI_Comm comm, const JobConfig& cfg) {
  int rank = 0;
  RA_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  std::string text = canonical_settings_json(cfg);
  // max(h) and max(~h) in one all-reduce: they agree when max(h) == min(h).
  const std::uint64_t h = fnv1a(text);
  std::uint64_t both[2] = {h, ~h};
  RA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, both, 2, MPI_UINT64_T, MPI_MAX, comm));
  if (both[0] == ~both[1]) return;

  // Rank 0's settings to every rank; each names its own first difference,
  // and agree() prints the lowest differing rank's.
  long long len = static_cast<long long>(text.size());
  RA_MPI_CHECK(MPI_Bcast(&len, 1, MPI_LONG_LONG, 0, comm));
  RA_CHECK(len <= INT_MAX, internal, "settings of ", len, " bytes");
  text.resize(static_cast<std::size_t>(len));
  RA_MPI_CHECK(MPI_Bcast(text.data(), static_cast<int>(len), MPI_CHAR, 0, comm));
  agree(comm, [&] {
    const std::string diff = first_difference(nlohmann::ordered_json::parse(text), cfg, rank);
    RA_CHECK(diff.empty(), usage, "ranks were started with different settings: ", diff);
  });
}

std::string settings_json(const JobConfig& cfg, bool packed_input) {
  const JobConfig ran = cfg.as_run(packed_input);
  nlohmann::json j = nlohmann::json::object();
  for_each_setting([&](const auto& s) { j[s.section][s.key] = recorded_value(ran, s); });
  return j.dump();
}

std::string result_settings_json(const JobConfig& cfg, bool packed_input) {
  const JobConfig ran = cfg.as_run(packed_input);
  nlohmann::json j = nlohmann::json::object();
  for_each_setting([&](const auto& s) {
    if (s.result) j[s.resume_name ? s.resume_name : s.key] = recorded_value(ran, s);
  });
  return j.dump();
}

std::string canonical_settings_json(const JobConfig& cfg) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for_each_setting([&](const auto& s) { j[s.name()] = json_value(cfg.*s.member); });
  return j.dump();
}

}  // namespace ringattn
