// The CLI's summaries, examples, `ringattn help` and its generated reference.
#include "cli/help.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <set>

#include <CLI/Version.hpp>

#include "cli/commands.hpp"

namespace ringattn::cli {
namespace {

// The subcommands in the order --help lists them, each with a one-line
// summary for that list, an example for its own help and how it is launched
// (the synopsis' prefix); the subcommand's full description moves below its
// options.
struct Summary {
  const char* path;  // "bench ring": a subcommand of bench
  const char* line;
  const char* example;
  const char* launch;  // "mpirun -np P ": every rank works
};
constexpr const char* kMpi = "mpirun -np P ";
constexpr const char* kMaybeMpi = "[mpirun -np P] ";
constexpr Summary kSummaries[] = {
    {"run", "Compute exact attention for an HDF5 input across the MPI ranks",
     "mpirun -np 4 ringattn run --input in.h5 --output out.h5 --causal --lse", kMpi},
    {"verify", "Check a run's output against a float64 recomputation",
     "ringattn verify --input in.h5 --output out.h5 --rows 2000", ""},
    {"weights", "Write the exact attention weights of chosen rows of a run",
     "ringattn weights --input in.h5 --output out.h5 --rows 0:4096:512 --top-k 32 --to w.h5",
     kMaybeMpi},
    {"info", "Describe an HDF5 file and whether `run` accepts it", "ringattn info in.h5 --json",
     ""},
    {"gen", "Write a seeded synthetic input",
     "ringattn gen --output in.h5 --heads 8 --kv-heads 2 --n 65536 --d 64", ""},
    {"serve", "Run the attention service: contexts resident across the ranks",
     "mpirun -np 2 ringattn serve --socket /tmp/ra.sock --context book=book.h5", kMpi},
    {"submit", "Queue a batch job (a TOML run config) on a running service",
     "ringattn submit --socket /tmp/ra.sock --wait configs/smoke.toml", ""},
    {"query", "Ask a running service: ping, list, status, job_status, drop",
     "ringattn query --socket /tmp/ra.sock status", ""},
    {"bench", "Benchmarks: the kernel (one process), the ring (under mpirun)",
     "ringattn bench kernel --n 8192 --d 128 --heads 4 --threads 2 --json", ""},
    {"bench kernel", "Time the fused kernel against this machine's FMA peak",
     "ringattn bench kernel --n 8192 --d 128 --heads 4 --threads 2 --json", ""},
    {"bench ring", "Time the ring on P ranks against one rank",
     "mpirun -np 2 ringattn bench ring --n 65536 --d 64 --causal --threads 1 --json", kMpi},
    {"plan", "Predict a ring run's time, efficiency and memory at each rank count",
     "ringattn plan --n 1048576 --d 128 --heads 8 --kv-heads 2 --causal --bandwidth 100",
     kMaybeMpi},
    {"selfcheck", "Check the kernel against the float64 reference on built-in problems",
     "ringattn selfcheck --threads 2", ""},
    {"help", "Print the help of a subcommand", "ringattn help bench ring", ""},
};

CLI::App* find_subcommand(CLI::App& app, const std::string& path) {
  CLI::App* at = &app;
  std::size_t start = 0;
  while (at && start < path.size()) {
    const std::size_t end = std::min(path.find(' ', start), path.size());
    const std::string name = path.substr(start, end - start);
    CLI::App* next = nullptr;
    for (CLI::App* s : at->get_subcommands({}))
      if (s->get_name() == name) next = s;
    at = next;
    start = end + 1;
  }
  return at;
}

// The metavar: the parser's own ("f32|bf16", "none|L[,R]") or, where that
// is only a type (TEXT, INT, ...), the flag's name in capitals, as argparse
// writes it: --kv-heads KV_HEADS.
std::string metavar(const CLI::Option& o) {
  const std::string type = o.get_type_name();
  const std::string bare = type.substr(0, type.find(':'));  // a validator's words follow ':'
  static const std::set<std::string> kTypes = {"TEXT", "INT", "UINT", "FLOAT", "NUMBER"};
  if (!kTypes.count(bare)) return type;
  std::string name = o.get_lnames().empty() ? o.get_name() : o.get_lnames().front();
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char ch) { return ch == '-' ? '_' : std::toupper(ch); });
  return name;
}

bool is_positional(const CLI::Option& o) {
  return o.get_lnames().empty() && o.get_snames().empty();
}

// "--flag METAVAR", "--switch", or a positional's METAVAR; "..." where it
// repeats.
std::string option_words(const CLI::Option& o) {
  std::string s = is_positional(o) ? metavar(o) : "--" + o.get_lnames().front();
  const std::string m = metavar(o);
  if (!is_positional(o) && o.get_type_size_max() > 0 && !m.empty()) s += " " + m;
  if (o.get_items_expected_max() > 1) s += "...";
  return s;
}

// The subcommand's options in its synopsis: required ones bare, the rest
// in brackets, a switch and the one that excludes it together, the
// positional arguments last.
std::string synopsis_of(const CLI::App& sub, const std::string& prefix) {
  std::vector<std::string> items;
  std::set<const CLI::Option*> done;
  std::vector<const CLI::Option*> options = sub.get_options();
  std::stable_partition(options.begin(), options.end(),
                        [](const CLI::Option* o) { return !is_positional(*o); });  // last
  for (const CLI::Option* o : options) {
    if (done.count(o) || o->get_lnames() == std::vector<std::string>{"help"}) continue;
    done.insert(o);
    std::string words = option_words(*o);
    for (const CLI::Option* x : o->get_excludes())
      if (!done.count(x)) {
        words += " | " + option_words(*x);
        done.insert(x);
      }
    items.push_back(o->get_required() ? words : "[" + words + "]");
  }
  // Wrapped at 80 columns, continuation lines indented.
  std::string out = prefix, line = prefix;
  for (const std::string& item : items) {
    if (line.size() + 1 + item.size() > 80 && line.size() > 6) {
      out += "\n      ";
      line = "      ";
    } else {
      out += " ";
      line += " ";
    }
    out += item;
    line += item;
  }
  return out + "\n";
}

// The subcommands that do work (not bench or help themselves).
template <typename F>
void for_each_leaf(CLI::App& app, F&& f) {
  for (const Summary& s : kSummaries) {
    CLI::App* sub = find_subcommand(app, s.path);
    if (sub && sub->get_subcommands({}).empty() && std::string(s.path) != "help") f(s, *sub);
  }
}

std::string help_of(CLI::App& sub, const std::string& name) {
  return sub.get_formatter()->make_help(&sub, name, CLI::AppFormatMode::Normal);
}

}  // namespace

void describe_subcommands(CLI::App& app) {
  for (const Summary& s : kSummaries) {
    CLI::App* sub = find_subcommand(app, s.path);
    if (!sub) continue;
    const std::string details = sub->get_description();
    std::string footer;
    if (details != s.line) footer = "\n" + details + "\n";
    sub->footer(footer + "\nExample:\n  " + s.example);
    sub->description(s.line);
  }
}

std::string cli_synopsis(CLI::App& app) {
  std::string out = "ringattn --help | --version | help SUBCOMMAND...\n";
  for_each_leaf(app, [&](const Summary& s, CLI::App& sub) {
    out += synopsis_of(sub, std::string(s.launch) + "ringattn " + s.path);
  });
  return out;
}

std::string cli_reference_markdown(CLI::App& app) {
  std::string out =
      "# The CLI in full\n\n"
      "Generated from the parser by `ringattn help --markdown` (`launch/gen_cli_docs.sh`\n"
      "writes this page and README's synopsis; the `docs_cli` test fails when either\n"
      "is out of date). Formatted by CLI11 " CLI11_VERSION ".\n\n```\n" +
      cli_synopsis(app) + "```\n";
  for_each_leaf(app, [&](const Summary& s, CLI::App& sub) {
    const std::string name = std::string("ringattn ") + s.path;
    out += "\n## " + name + "\n\n```\n" + help_of(sub, name) + "```\n";
  });
  return out;
}

int print_help(CLI::App& app, const std::vector<std::string>& words) {
  std::string path;
  for (const std::string& w : words) path += (path.empty() ? "" : " ") + w;
  CLI::App* target = find_subcommand(app, path);
  if (!target) {
    std::fprintf(stderr, "ringattn: usage error: no subcommand '%s' (see --help)\n", path.c_str());
    return kUsage;
  }
  // The formatter itself: App::help() of a parent shows its parsed
  // subcommand's help, here `help`'s own.
  std::fputs(help_of(*target, path.empty() ? "ringattn" : "ringattn " + path).c_str(), stdout);
  return 0;
}

}  // namespace ringattn::cli
