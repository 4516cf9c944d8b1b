// TOML config loading with strict key checking (toml++, Debian's
// libtomlplusplus-dev).
#include "cli/config_file.hpp"

#include <toml++/toml.h>
#include <set>
#include <sstream>

#include "core/error.hpp"

namespace ringattn::cli {
namespace {

// Reads keys from one table, remembering which were read so the rest can be
// reported as unknown.
class Section {
 public:
  Section(const std::string& file, const std::string& name, const toml::table* t)
      : file_(file), name_(name), t_(t) {}

  template <class T>
  void get(const char* key, T& out) {
    if (!t_) return;
    const toml::node* n = t_->get(key);
    if (!n) return;
    read_.insert(key);
    if constexpr (std::is_same_v<T, bool>) {
      const auto v = n->value_exact<bool>();
      RA_CHECK(v.has_value(), usage, where(key), " must be true or false");
      out = *v;
    } else if constexpr (std::is_same_v<T, std::string>) {
      const auto v = n->value_exact<std::string>();
      RA_CHECK(v.has_value(), usage, where(key), " must be a string");
      out = *v;
    } else if constexpr (std::is_integral_v<T>) {
      const auto v = n->value_exact<std::int64_t>();
      RA_CHECK(v.has_value(), usage, where(key), " must be an integer");
      out = static_cast<T>(*v);
      RA_CHECK(static_cast<std::int64_t>(out) == *v, usage, where(key), " is out of range");
    } else {
      const auto v = n->value<double>();  // integers are fine for a float key
      RA_CHECK(v.has_value(), usage, where(key), " must be a number");
      out = static_cast<T>(*v);
    }
  }

  std::string where(const char* key) const { return file_ + ": " + name_ + "." + key; }

  void check_unknown() const {
    if (!t_) return;
    for (const auto& [k, v] : *t_)
      RA_CHECK(read_.count(std::string(k.str())) != 0, usage, file_, ": unknown key '", name_, ".",
               k.str(), "'");
  }

 private:
  std::string file_, name_;
  const toml::table* t_;
  std::set<std::string> read_;
};

}  // namespace

void load_config_file(const std::string& path, JobConfig& cfg) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& src = e.source();
    RA_CHECK(false, usage, path, ":", src.begin.line, ":", src.begin.column,
             ": not valid TOML: ", e.description());
  }
  static const std::set<std::string> kSections = {"input", "output", "attention", "ring", "run"};
  for (const auto& [k, v] : root) {
    RA_CHECK(kSections.count(std::string(k.str())) != 0, usage, path, ": unknown key '", k.str(),
             "' (sections: input, output, attention, ring, run)");
    RA_CHECK(v.is_table(), usage, path, ": '", k.str(), "' must be a table ([", k.str(), "])");
  }

  Section in(path, "input", root["input"].as_table());
  in.get("path", cfg.input);
  in.get("q", cfg.q_name);
  in.get("k", cfg.k_name);
  in.get("v", cfg.v_name);
  in.get("allow_nonfinite", cfg.allow_nonfinite);
  in.check_unknown();

  Section out(path, "output", root["output"].as_table());
  out.get("path", cfg.output);
  out.get("lse", cfg.lse);
  out.get("dtype", cfg.o_dtype);
  out.get("overwrite", cfg.overwrite);
  out.check_unknown();
  RA_CHECK(cfg.o_dtype == "f32" || cfg.o_dtype == "input", usage, out.where("dtype"),
           " must be \"f32\" or \"input\", got \"", cfg.o_dtype, "\"");

  Section att(path, "attention", root["attention"].as_table());
  att.get("causal", cfg.causal);
  att.get("scale", cfg.scale);
  std::string compute = compute_type_name(cfg.compute);
  att.get("compute", compute);
  att.check_unknown();
  RA_CHECK(cfg.scale >= 0 && std::isfinite(cfg.scale), usage, att.where("scale"),
           " must be >= 0 (0: 1/sqrt(head dim))");
  RA_CHECK(compute == "f32" || compute == "bf16", usage, att.where("compute"),
           " must be \"f32\" or \"bf16\", got \"", compute, "\"");
  cfg.compute = parse_compute_type(compute.c_str());

  Section ring(path, "ring", root["ring"].as_table());
  std::string partition;
  ring.get("partition", partition);
  ring.get("transport", cfg.transport);
  ring.get("comm_timeout", cfg.comm_timeout);
  ring.check_unknown();
  RA_CHECK(cfg.transport == "auto" || cfg.transport == "mpi" || cfg.transport == "nccl", usage,
           ring.where("transport"), " must be \"auto\", \"mpi\" or \"nccl\", got \"", cfg.transport,
           "\"");
  RA_CHECK(cfg.comm_timeout >= 0 && std::isfinite(cfg.comm_timeout), usage,
           ring.where("comm_timeout"), " must be >= 0 seconds (0: no timeout)");
  if (!partition.empty()) {
    RA_CHECK(partition == "contiguous" || partition == "zigzag" || partition == "striped" ||
                 partition == "auto",
             usage, ring.where("partition"),
             " must be \"auto\", \"contiguous\", \"zigzag\" or \"striped\", got \"", partition,
             "\"");
    if (partition == "auto")
      cfg.partition.reset();
    else
      cfg.partition = parse_partition(partition);
  }

  Section run(path, "run", root["run"].as_table());
  run.get("threads", cfg.threads);
  run.get("kv_heads_per_chunk", cfg.kv_heads_per_chunk);
  run.get("metrics", cfg.metrics);
  run.get("progress_interval", cfg.progress_interval);
  run.get("backend", cfg.backend);
  run.get("memory_limit_mb", cfg.memory_limit_mb);
  run.get("resume", cfg.resume);
  run.get("checkpoint_interval", cfg.checkpoint_interval);
  run.check_unknown();
  RA_CHECK(cfg.checkpoint_interval >= 0 && std::isfinite(cfg.checkpoint_interval), usage,
           run.where("checkpoint_interval"), " must be >= 0 seconds (0: after every chunk)");
  RA_CHECK(cfg.backend == "cpu" || cfg.backend == "cuda", usage, run.where("backend"),
           " must be \"cpu\" or \"cuda\", got \"", cfg.backend, "\"");
  RA_CHECK(cfg.memory_limit_mb >= 0 && std::isfinite(cfg.memory_limit_mb), usage,
           run.where("memory_limit_mb"), " must be >= 0 (0: automatic)");
  RA_CHECK(cfg.threads >= 0 && cfg.threads <= 4096, usage, run.where("threads"),
           " must be in 0..4096 (0: automatic), got ", cfg.threads);
  RA_CHECK(cfg.kv_heads_per_chunk >= 1, usage, run.where("kv_heads_per_chunk"),
           " must be >= 1, got ", cfg.kv_heads_per_chunk);
  RA_CHECK(cfg.progress_interval > 0, usage, run.where("progress_interval"), " must be > 0");
}

std::string config_toml(const JobConfig& c) {
  toml::table t{
      {"input", toml::table{{"path", c.input},
                            {"q", c.q_name},
                            {"k", c.k_name},
                            {"v", c.v_name},
                            {"allow_nonfinite", c.allow_nonfinite}}},
      {"output",
       toml::table{
           {"path", c.output}, {"lse", c.lse}, {"dtype", c.o_dtype}, {"overwrite", c.overwrite}}},
      {"attention", toml::table{{"causal", c.causal},
                                {"scale", static_cast<double>(c.scale)},
                                {"compute", compute_type_name(c.compute)}}},
      {"ring", toml::table{{"partition", c.partition ? partition_name(*c.partition) : "auto"},
                           {"transport", c.transport},
                           {"comm_timeout", c.comm_timeout}}},
      {"run", toml::table{{"threads", c.threads},
                          {"kv_heads_per_chunk", c.kv_heads_per_chunk},
                          {"metrics", c.metrics},
                          {"progress_interval", c.progress_interval},
                          {"backend", c.backend},
                          {"memory_limit_mb", c.memory_limit_mb},
                          {"resume", c.resume},
                          {"checkpoint_interval", c.checkpoint_interval}}},
  };
  std::ostringstream os;
  os << t << "\n";
  return os.str();
}

}  // namespace ringattn::cli
