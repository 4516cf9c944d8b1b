// The settings table (job/job_config.hpp) and what is driven from it, without
// MPI: every number setting refuses NaN and Inf from a flag and from TOML
// with the same words; --scale refuses what a normal float32 cannot hold;
// --comm-timeout is bounded below the watchdog's overflow; enum typos name
// the choices; unknown keys are errors; --print-config loads back to the same
// config with every setting changed; the JSON forms keep their schema.
#include <gtest/gtest.h>

#include <unistd.h>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>

#include "comm/watchdog.hpp"
#include "core/error.hpp"
#include "job/config_toml.hpp"
#include "job/job.hpp"

namespace ringattn {
namespace {

// The text of the Error(usage) fn throws ("" when it throws none).
std::string usage_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.error_class(), ErrorClass::usage) << e.what();
    return e.what();
  }
  return "";
}

class ConfigFile : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("ringattn_config_" + std::to_string(::getpid()) + "_" +
            testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes `text` to a TOML file and returns its path.
  std::string toml(const std::string& text) {
    const std::string p = (dir_ / ("c" + std::to_string(n_++) + ".toml")).string();
    std::ofstream(p) << text;
    return p;
  }
  // The error loading `text` on top of the defaults gives ("" if none).
  std::string load_error(const std::string& text) {
    JobConfig c;
    const std::string p = toml(text);
    return usage_error([&] { load_config_file(p, c); });
  }

  std::filesystem::path dir_;
  int n_ = 0;
};

// What a flag's text does to a default config: "" or the error.
template <class S>
std::string flag_error(const S& s, const std::string& text) {
  JobConfig c;
  return usage_error([&] { assign(c, s, raw_from_text(s, text, s.flag), s.flag); });
}

// Calls fn(setting) for the setting named "section.key", of value type T.
template <class T, class Fn>
void with_setting(const std::string& name, Fn&& fn) {
  bool found = false;
  for_each_setting([&](const auto& s) {
    if constexpr (std::is_same_v<typename std::decay_t<decltype(s)>::Value, T>) {
      if (s.name() == name) {
        found = true;
        fn(s);
      }
    }
  });
  ASSERT_TRUE(found) << "no setting " << name << " of that type";
}

TEST_F(ConfigFile, EveryNumberSettingRefusesNanAndInfFromFlagsAndToml) {
  std::set<std::string> checked;
  for_each_setting([&](const auto& s) {
    using T = typename std::decay_t<decltype(s)>::Value;
    if constexpr (std::is_floating_point_v<T>) {
      checked.insert(s.name());
      for (const char* bad : {"nan", "inf", "-inf"}) {
        const std::string flag = flag_error(s, bad);
        EXPECT_NE(flag.find(std::string(s.flag) + " must be a finite number, got"),
                  std::string::npos)
            << s.flag << " " << bad << ": " << flag;
        const std::string file =
            load_error("[" + std::string(s.section) + "]\n" + s.key + " = " + bad + "\n");
        EXPECT_NE(file.find(": " + s.name() + " must be a finite number, got"), std::string::npos)
            << s.name() << " = " << bad << ": " << file;
        // The same words after where it came from.
        EXPECT_EQ(flag.substr(flag.find(" must")).substr(0, 30),
                  file.substr(file.find(" must")).substr(0, 30));
      }
    }
  });
  EXPECT_EQ(checked,
            (std::set<std::string>{"attention.scale", "ring.comm_timeout", "run.progress_interval",
                                   "run.memory_limit_mb", "run.checkpoint_interval"}));
}

TEST_F(ConfigFile, ScaleMustBeANormalFloat32) {
  with_setting<float>("attention.scale", [&](const auto& s) {
    for (const char* bad : {"1e39", "1e-39", "-1", "1e-45"}) {
      const std::string e = flag_error(s, bad);
      EXPECT_NE(e.find("--scale must be 0 (1/sqrt(D)) or >= 1.17549e-38 and <= 3.40282e+38"),
                std::string::npos)
          << bad << ": " << e;
    }
    for (const char* good : {"0", "1.1754944e-38", "3.4028234e38", "0.125"})
      EXPECT_EQ(flag_error(s, good), "") << good;
  });
  EXPECT_NE(load_error("[attention]\nscale = 1e39\n").find("attention.scale must be 0"),
            std::string::npos);
  EXPECT_NE(load_error("[attention]\nscale = 1e-39\n").find("got 1e-39"), std::string::npos);
}

TEST_F(ConfigFile, CommTimeoutIsBoundedBelowTheWatchdogsOverflow) {
  with_setting<double>("ring.comm_timeout", [&](const auto& s) {
    const std::string e = flag_error(s, "9.3e9");
    EXPECT_NE(e.find("--comm-timeout must be >= 0 and <= 1e+09 seconds (0: wait forever), got "
                     "9.3e+09"),
              std::string::npos)
        << e;
    EXPECT_EQ(flag_error(s, "1e9"), "");
    EXPECT_EQ(flag_error(s, "0"), "");
  });
  EXPECT_NE(load_error("[ring]\ncomm_timeout = -1\n").find("ring.comm_timeout must be >= 0"),
            std::string::npos);
}

TEST(Watchdog, ATimeoutPastTheClocksEndNeverFires) {
  // Before the deadline was clamped, 1e10 s overflowed steady_clock's
  // nanoseconds into the past and the watchdog ended this process at once.
  set_comm_timeout(1e10);
  {
    CommWatch watch("a long wait");
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  set_comm_timeout(0);
  SUCCEED() << "still alive";
}

TEST_F(ConfigFile, RangeErrorsPrintShortNumbers) {
  for_each_setting([&](const auto& s) {
    using T = typename std::decay_t<decltype(s)>::Value;
    if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
      const std::string e = flag_error(s, "-1e30");
      EXPECT_NE(e, "") << s.flag;
      // No 309-digit DBL_MAX, no "0.000000" bounds.
      EXPECT_EQ(e.find("179769"), std::string::npos) << e;
      EXPECT_EQ(e.find("0.000000"), std::string::npos) << e;
    }
  });
}

TEST_F(ConfigFile, EnumTyposNameTheChoices) {
  EXPECT_NE(load_error("[run]\nbackend = \"gpu\"\n")
                .find("run.backend must be \"cpu\" or \"cuda\", got \"gpu\""),
            std::string::npos);
  EXPECT_NE(load_error("[ring]\ntransport = \"ucx\"\n")
                .find("ring.transport must be \"auto\", \"mpi\" or \"nccl\", got \"ucx\""),
            std::string::npos);
  EXPECT_NE(load_error("[output]\ndtype = \"f16\"\n")
                .find("output.dtype must be \"f32\" or \"input\", got \"f16\""),
            std::string::npos);
  EXPECT_NE(
      load_error("[ring]\npartition = \"zig\"\n")
          .find("\"auto\", \"contiguous\", \"zigzag\", \"striped\" or \"balanced\", got \"zig\""),
      std::string::npos);
  EXPECT_NE(load_error("[attention]\ncompute = \"fp16\"\n").find("\"f32\" or \"bf16\""),
            std::string::npos);
  with_setting<Backend>("run.backend", [&](const auto& s) {
    EXPECT_NE(flag_error(s, "CPU").find("--backend must be \"cpu\" or \"cuda\", got \"CPU\""),
              std::string::npos);
  });
  // Each name parses back to its value.
  for_each_setting([&](const auto& s) {
    using T = typename std::decay_t<decltype(s)>::Value;
    if constexpr (setting_detail::is_choice<T>) {
      for (const T& v : setting_detail::all_choices<T>()) {
        JobConfig c;
        assign(c, s, RawValue(choice_name(v)), "test");
        EXPECT_TRUE(c.*s.member == v) << s.name() << " " << choice_name(v);
      }
    }
  });
}

TEST_F(ConfigFile, UnknownKeysAndWrongTypesAreErrors) {
  EXPECT_NE(load_error("[run]\nthread = 2\n").find("unknown key 'run.thread'"), std::string::npos);
  EXPECT_NE(
      load_error("[outputs]\npath = \"x.h5\"\n")
          .find("unknown key 'outputs' (sections: input, output, attention, ring, run, gradients)"),
      std::string::npos);
  EXPECT_NE(load_error("run = 3\n").find("'run' must be a table ([run])"), std::string::npos);
  EXPECT_NE(load_error("threads = 2\n").find("unknown key 'threads'"), std::string::npos);
  EXPECT_NE(
      load_error("[attention]\ncausal = \"yes\"\n").find("attention.causal must be true or false"),
      std::string::npos);
  EXPECT_NE(load_error("[run]\nthreads = 2.5\n").find("run.threads must be an integer"),
            std::string::npos);
  EXPECT_NE(load_error("[run]\nthreads = 5000\n").find("run.threads must be >= 0 and <= 4096"),
            std::string::npos);
  EXPECT_NE(
      load_error("[ring]\ncomm_timeout = \"1h\"\n").find("ring.comm_timeout must be a number"),
      std::string::npos);
  EXPECT_NE(load_error("[input]\npath = 3\n").find("input.path must be a string"),
            std::string::npos);
  EXPECT_NE(load_error("[run\n").find(":1:"), std::string::npos);  // where the syntax broke
  EXPECT_EQ(load_error("[ring]\ncomm_timeout = 60\n"), "");        // an integer for a number
}

// A config with every setting away from its default (checked below, so a new
// setting must be added here, and so to the round trip).
JobConfig every_setting_changed() {
  JobConfig c;
  c.input = "in dir/in.h5";
  c.q_name = "queries";
  c.k_name = "keys";
  c.v_name = "vals \"quoted\"";
  c.allow_nonfinite = true;
  c.window = {128, 3};
  c.output = "out.h5";
  c.lse = true;
  c.o_dtype = OutDType::input;
  c.overwrite = true;
  c.causal = true;
  c.scale = 0.1f;  // not a short decimal as a double: the printer must not round it
  c.compute = ComputeType::bf16;
  c.partition = PartitionKind::striped;
  c.transport = TransportKind::mpi;
  c.comm_timeout = 12.5;
  c.threads = 3;
  c.kv_heads_per_chunk = 4;
  c.metrics = "m.json";
  c.progress = ProgressStyle::lines;
  c.progress_interval = 0.25;
  c.backend = Backend::cuda;
  c.memory_limit_mb = 1536;
  c.resume = true;
  c.checkpoint_interval = 0;
  c.do_name = "grad_o";
  c.backward = true;
  c.reuse_forward = true;
  return c;
}

TEST_F(ConfigFile, PrintConfigLoadsBackToTheSameConfig) {
  const JobConfig want = every_setting_changed();
  const JobConfig defaults;
  const nlohmann::json a = nlohmann::json::parse(canonical_settings_json(want));
  const nlohmann::json d = nlohmann::json::parse(canonical_settings_json(defaults));
  for (const auto& [name, value] : a.items())
    EXPECT_NE(value, d[name]) << name << " is not changed: the round trip would not test it";

  JobConfig got;
  load_config_file(toml(config_toml(want)), got);
  EXPECT_EQ(canonical_settings_json(got), canonical_settings_json(want));
  EXPECT_EQ(got.scale, want.scale);
  // And the defaults too ("auto" choices, empty paths).
  JobConfig back = every_setting_changed();
  load_config_file(toml(config_toml(defaults)), back);
  EXPECT_EQ(canonical_settings_json(back), canonical_settings_json(defaults));
}

TEST(ConfigJson, RecordsResolvedChoicesInTheSameSchema) {
  JobConfig c;
  c.causal = true;
  const nlohmann::json j = nlohmann::json::parse(config_json(c, false));
  EXPECT_EQ(j["ring"]["partition"], "zigzag");  // auto, resolved
  EXPECT_EQ(j["ring"]["transport"], "mpi");
  EXPECT_EQ(j["output"]["dtype"], "f32");
  EXPECT_EQ(j["run"]["backend"], "cpu");
  EXPECT_EQ(j["attention"]["causal"], true);
  std::set<std::string> sections;
  for (const auto& [k, v] : j.items()) sections.insert(k);
  EXPECT_EQ(sections,
            (std::set<std::string>{"input", "output", "attention", "ring", "run", "gradients"}));
  // No setting records "auto": every auto choice is one JobConfig::as_run makes.
  for (const auto& [section, settings] : j.items())
    for (const auto& [key, value] : settings.items())
      EXPECT_NE(value, "auto") << section << "." << key << " is recorded unresolved";
}

// The partition recorded is the one the run builds (job_partitions): a
// packed input's auto is balanced, causal or not; a partition given stays.
TEST(ConfigJson, RecordsThePartitionTheRunUses) {
  for (const bool causal : {false, true})
    for (const bool packed : {false, true}) {
      JobConfig c;
      c.causal = causal;
      const PartitionKind ran = c.effective_partition(packed);
      EXPECT_EQ(ran, packed   ? PartitionKind::balanced
                     : causal ? PartitionKind::zigzag
                              : PartitionKind::contiguous);
      EXPECT_EQ(nlohmann::json::parse(config_json(c, packed))["ring"]["partition"],
                partition_name(ran));
      EXPECT_EQ(nlohmann::json::parse(result_settings_json(c, packed))["partition"],
                partition_name(ran));
      c.partition = PartitionKind::striped;
      EXPECT_EQ(c.effective_partition(packed), PartitionKind::striped);
      EXPECT_EQ(nlohmann::json::parse(config_json(c, packed))["ring"]["partition"], "striped");
    }
}

TEST(ConfigJson, TheResumeKeyHoldsExactlyTheSettingsThatChangeBits) {
  JobConfig c;
  InputInfo info;
  info.file.path = "/data/in.h5";
  const nlohmann::json j = nlohmann::json::parse(resume_key_json(c, info, 3));
  std::set<std::string> keys;
  for (const auto& [k, v] : j.items()) keys.insert(k);
  EXPECT_EQ(keys,
            (std::set<std::string>{
                "input_path",   "input_size", "input_mtime_ns", "input_inode", "input_linked",
                "ranks",        "q_dataset",  "k_dataset",      "v_dataset",   "causal",
                "window",       "scale",      "compute",        "partition",   "kv_heads_per_chunk",
                "lse",          "o_dtype",    "backend",        "do_dataset",  "backward",
                "reuse_forward"}));
  EXPECT_EQ(j["partition"], "contiguous");  // resolved: a resumed auto run must match it
  EXPECT_EQ(j["ranks"], 3);
  // A packed input's auto is balanced: a partial output made with another
  // partition is not continued by an auto run.
  InputInfo packed = info;
  packed.cu_q.object = H5Object::dataset;
  ASSERT_TRUE(packed.packed());
  EXPECT_EQ(nlohmann::json::parse(resume_key_json(c, packed, 3))["partition"], "balanced");
  // Threads, metrics, timeouts do not change the bits: a resume may change them.
  JobConfig other = c;
  other.threads = 7;
  other.comm_timeout = 5;
  other.metrics = "m.json";
  EXPECT_EQ(resume_key_json(other, info, 3), resume_key_json(c, info, 3));
  other.kv_heads_per_chunk = 2;
  EXPECT_NE(resume_key_json(other, info, 3), resume_key_json(c, info, 3));
}

TEST(CheckJobConfig, RefusesAStructFilledInCodeAsFlagsWould) {
  JobConfig c;
  c.input = "in.h5";
  c.output = "out.h5";
  EXPECT_EQ(usage_error([&] { check_job_config(c); }), "");
  c.scale = std::nanf("");
  EXPECT_NE(usage_error([&] {
              check_job_config(c);
            }).find("attention.scale must be a finite number, got nan"),
            std::string::npos);
  c.scale = 0;
  c.threads = -1;
  EXPECT_NE(usage_error([&] { check_job_config(c); }).find("run.threads must be >= 0"),
            std::string::npos);
  c.threads = 0;
  c.transport = TransportKind::nccl;
  EXPECT_NE(usage_error([&] { check_job_config(c); }).find("needs --backend cuda"),
            std::string::npos);
  c.transport.reset();
  c.output.clear();
  EXPECT_NE(usage_error([&] { check_job_config(c); }).find("no output file given"),
            std::string::npos);
}

TEST(SettingHelp, ShowsTheDefaultAndWhatZeroMeans) {
  with_setting<double>("ring.comm_timeout", [](const auto& s) {
    EXPECT_NE(setting_help(s).find("(0: wait forever) [default: 1800]"), std::string::npos)
        << setting_help(s);
  });
  with_setting<std::optional<PartitionKind>>("ring.partition", [](const auto& s) {
    EXPECT_EQ(setting_metavar(s), "auto|contiguous|zigzag|striped|balanced");
    EXPECT_NE(setting_help(s).find("[default: auto]"), std::string::npos);
  });
  with_setting<std::string>("input.path", [](const auto& s) {
    EXPECT_EQ(setting_help(s).find("[default"), std::string::npos);  // no default to show
  });
}

}  // namespace
}  // namespace ringattn
