// `ringattn info FILE`: what an HDF5 file holds, before a run is pointed at
// it or after one wrote it: every root dataset (shape, type, layout, chunks,
// filters), the root attributes (the `config` a run records is shown as
// JSON), for an input (q, k, v present) the verdict of the same validation
// `run` makes (and with a `do` beside them, the backward's: do, and o and lse
// when both are there for --reuse-forward), and for an output (o present)
// whether it is complete and which gradients (dq, dk, dv) it holds. Text by
// default, one JSON object with --json. One process reads; under mpirun the
// other ranks wait.
//
// Includes: cli/commands.hpp, cli/mpi_session.hpp (on_rank0),
// io/h5_describe.hpp (the description), io/input_file.hpp (inspect_input),
// io/output_file.hpp (kCompleteAttribute), nlohmann/json.hpp.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>
#include <string>
#include <variant>

#include "cli/commands.hpp"
#include "cli/mpi_session.hpp"
#include "core/error.hpp"
#include "io/h5_describe.hpp"
#include "io/input_file.hpp"
#include "io/output_file.hpp"

namespace ringattn::cli {
namespace {

struct InfoFlags {
  std::string path;
  bool json = false;
};

using nlohmann::json;

// The `config` attribute parsed, or null when it is not a JSON object.
json parsed_config(const H5AttributeDesc& a) {
  if (a.name != "config" || a.summary) return nullptr;
  const auto* text = std::get_if<std::string>(&a.value);
  if (!text) return nullptr;
  json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : json(nullptr);
}

json attr_json(const H5AttributeDesc& a) {
  if (json c = parsed_config(a); !c.is_null()) return c;
  return std::visit([](const auto& v) { return json(v); }, a.value);
}

std::string number_text(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string attr_text(const H5AttributeDesc& a) {
  if (a.summary) return "<" + std::get<std::string>(a.value) + ">";
  struct Visitor {
    std::string operator()(const std::string& s) const { return json(s).dump(); }  // quoted
    std::string operator()(std::int64_t v) const { return std::to_string(v); }
    std::string operator()(double v) const { return number_text(v); }
    std::string operator()(const std::vector<std::int64_t>& v) const { return json(v).dump(); }
    std::string operator()(const std::vector<double>& v) const { return json(v).dump(); }
  };
  return std::visit(Visitor{}, a.value);
}

std::string dims_text(const std::vector<std::int64_t>& d, const char* open = "[",
                      const char* close = "]") {
  std::string s = open;
  for (std::size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + close;
}

std::string filter_text(const H5FilterDesc& f) {
  std::string s = f.name;
  if (f.id == H5Z_FILTER_DEFLATE && !f.params.empty())
    s += " (level " + std::to_string(f.params[0]) + ")";
  return s;
}

std::string bytes_text(std::int64_t b) {
  char buf[64];
  if (b < 1024)
    std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(b));
  else if (b < (std::int64_t{1} << 20))
    std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(b) / 1024);
  else if (b < (std::int64_t{1} << 30))
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(b) / (1 << 20));
  else
    std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(b) / (1 << 30));
  return buf;
}

// What the file is for ringattn: an input (with the validation verdict),
// an output (complete or not), both or neither.
struct Roles {
  bool input = false;
  bool input_ok = false;
  std::string input_error;
  InputInfo input_info;
  std::vector<std::int64_t> lengths;  // a packed input's query sequence lengths, sorted
  // A backward input: `do` at the root of a valid input; its verdict, and
  // whether o and lse are there for --reuse-forward (checked too).
  bool backward = false;
  bool backward_ok = false;
  bool reuse_forward = false;
  std::string backward_error;
  InputInfo backward_info;
  bool output = false;
  bool complete = false;
  std::vector<std::string> gradients;  // the gradient datasets an output holds (dq, dk, dv)
};

std::string error_text(const Error& e) {
  return std::string(error_class_name(e.error_class())) + " error: " + user_text(e);
}

// The backward's checks `run --backward` makes (with the default --do-name),
// on the same description: do, and o and lse when both are at the root.
void check_backward_input(const H5FileDesc& d, Roles& r) {
  r.backward = d.object(kDoDataset) != nullptr;
  if (!r.backward) return;
  InputNames names;
  names.d_o = kDoDataset;
  r.reuse_forward = d.object(kODataset) != nullptr && d.object(kLseDataset) != nullptr;
  if (r.reuse_forward) {
    names.o = kODataset;
    names.lse = kLseDataset;
  }
  try {
    r.backward_info = check_input(d, names);
    r.backward_ok = true;
  } catch (const Error& e) {
    r.backward_error = error_text(e);
  }
}

Roles roles_of(const H5FileDesc& d) {
  Roles r;
  // Names q, k and v at the root make it meant as an input, whatever they
  // lead to: the checks then say whether it is usable (a link to nothing, a
  // group where a dataset belongs, ... are run's refusals too).
  r.input = d.object("q") && d.object("k") && d.object("v");
  if (r.input) {
    try {
      r.input_info = check_input(d);  // the checks `run` makes, on the same description
      if (r.input_info.packed()) {
        const Documents docs = read_input_documents(r.input_info);
        const std::vector<std::int64_t>& cu = docs.cu_q();
        for (std::size_t i = 0; i + 1 < cu.size(); ++i) r.lengths.push_back(cu[i + 1] - cu[i]);
        std::sort(r.lengths.begin(), r.lengths.end());
      }
      r.input_ok = true;
    } catch (const Error& e) {
      r.input_error = error_text(e);
    }
    if (r.input_ok) check_backward_input(d, r);
  }
  r.output = d.dataset(kODataset) != nullptr;
  for (const char* g : {kDqDataset, kDkDataset, kDvDataset})
    if (d.dataset(g) != nullptr) r.gradients.push_back(g);
  if (const auto* c = d.attribute(kCompleteAttribute); c && !c->summary)
    if (const auto* v = std::get_if<std::int64_t>(&c->value)) r.complete = *v == 1;
  return r;
}

// Root objects that are not datasets, as "name (group)".
std::vector<std::string> other_objects(const H5FileDesc& d) {
  std::vector<std::string> out;
  for (const auto& o : d.objects)
    if (o.object != H5Object::dataset)
      out.push_back(o.name + " (" + h5_object_name(o.object) + ")");
  return out;
}

// Length statistics of packed sequences (sorted lengths).
struct SequenceStats {
  std::int64_t count = 0, empty = 0, min = 0, median = 0, max = 0;
  double mean = 0;
};
SequenceStats sequence_stats(const std::vector<std::int64_t>& sorted) {
  SequenceStats st;
  st.count = static_cast<std::int64_t>(sorted.size());
  if (sorted.empty()) return st;
  st.empty = std::count(sorted.begin(), sorted.end(), std::int64_t{0});
  st.min = sorted.front();
  st.max = sorted.back();
  st.median = sorted[sorted.size() / 2];
  st.mean = static_cast<double>(std::accumulate(sorted.begin(), sorted.end(), std::int64_t{0})) /
            static_cast<double>(st.count);
  return st;
}

void print_json(const H5FileDesc& d, const Roles& r) {
  json datasets = json::array();
  for (const auto& ds : d.objects) {
    if (ds.object != H5Object::dataset) continue;
    json filters = json::array();
    for (const auto& f : ds.filters)
      filters.push_back({{"name", f.name}, {"id", f.id}, {"params", f.params}});
    datasets.push_back({{"name", ds.name},
                        {"shape", ds.dims},
                        {"dtype", ds.type.name},
                        {"big_endian", ds.type.order == "be"},
                        {"layout", ds.layout},
                        {"chunk", ds.chunk.empty() ? json(nullptr) : json(ds.chunk)},
                        {"filters", filters},
                        {"storage_bytes", ds.storage_bytes}});
  }
  json attrs = json::object();
  for (const auto& a : d.attributes) attrs[a.name] = attr_json(a);
  json j = {{"path", d.path},
            {"size_bytes", d.size_bytes},
            {"datasets", datasets},
            {"other_objects", other_objects(d)},
            {"attributes", attrs}};
  if (r.input) {
    json in = {{"valid", r.input_ok}};
    if (r.input_ok) {
      const AttnShape s = r.input_info.shape;
      in.update({{"batch", s.batch},
                 {"heads", s.heads_q},
                 {"kv_heads", s.heads_kv},
                 {"n", s.tokens_q},
                 {"n_kv", s.tokens_kv},
                 {"d", s.head_dim},
                 {"dtype", dtype_name(r.input_info.dtype)}});
      if (r.input_info.packed()) {
        const SequenceStats st = sequence_stats(r.lengths);
        in["sequences"] = {
            {"count", st.count},
            {"empty", st.empty},
            {"min", st.min},
            {"median", st.median},
            {"mean", st.mean},
            {"max", st.max},
            {"offsets", r.input_info.cu_q.name == r.input_info.cu_k.name
                            ? json(r.input_info.cu_q.name)
                            : json({r.input_info.cu_q.name, r.input_info.cu_k.name})}};
      }
      if (r.backward) {
        json bw = {
            {"valid", r.backward_ok}, {"do", kDoDataset}, {"reuse_forward", r.reuse_forward}};
        if (r.backward_ok)
          bw["do_dtype"] = dtype_name(r.backward_info.dtype_of(InputTensor::d_o));
        else
          bw["error"] = r.backward_error;
        in["backward"] = bw;
      }
    } else {
      in["error"] = r.input_error;
    }
    j["input"] = in;
  }
  if (r.output) j["output"] = {{"complete", r.complete}, {"gradients", r.gradients}};
  // Names in a file need not be UTF-8: such bytes print as U+FFFD.
  std::printf("%s\n", j.dump(2, ' ', false, json::error_handler_t::replace).c_str());
}

void print_text(const H5FileDesc& d, const Roles& r) {
  std::printf("%s: HDF5, %s\n", d.path.c_str(), bytes_text(d.size_bytes).c_str());
  const bool none = std::none_of(d.objects.begin(), d.objects.end(), [](const H5DatasetDesc& o) {
    return o.object == H5Object::dataset;
  });
  std::printf("datasets:%s\n", none ? " none" : "");
  std::size_t w = 0;
  for (const auto& ds : d.objects)
    if (ds.object == H5Object::dataset) w = std::max(w, ds.name.size());
  for (const auto& ds : d.objects) {
    if (ds.object != H5Object::dataset) continue;
    std::string line = "  " + ds.name + std::string(w - ds.name.size(), ' ') + "  " +
                       dims_text(ds.dims) + " " + ds.type.name +
                       (ds.type.order == "be" ? " big-endian" : "") + ", " + ds.layout;
    if (!ds.chunk.empty()) line += " " + dims_text(ds.chunk, "(", ")");
    for (const auto& f : ds.filters) line += ", " + filter_text(f);
    line += ", " + bytes_text(ds.storage_bytes) + " stored";
    std::printf("%s\n", line.c_str());
  }
  for (const auto& o : other_objects(d)) std::printf("  %s\n", o.c_str());
  std::printf("attributes:%s\n", d.attributes.empty() ? " none" : "");
  for (const auto& a : d.attributes) {
    if (json c = parsed_config(a); !c.is_null()) {
      // Pretty JSON, indented under its name.
      std::istringstream lines(c.dump(2));
      std::printf("  %s =\n", a.name.c_str());
      for (std::string l; std::getline(lines, l);) std::printf("    %s\n", l.c_str());
    } else {
      std::printf("  %s = %s\n", a.name.c_str(), attr_text(a).c_str());
    }
  }
  if (r.input) {
    if (r.input_ok) {
      const AttnShape s = r.input_info.shape;
      std::printf("input: OK (B %lld, heads %lld, kv heads %lld, N %lld, N_kv %lld, D %lld, %s)\n",
                  static_cast<long long>(s.batch), static_cast<long long>(s.heads_q),
                  static_cast<long long>(s.heads_kv), static_cast<long long>(s.tokens_q),
                  static_cast<long long>(s.tokens_kv), static_cast<long long>(s.head_dim),
                  dtype_name(r.input_info.dtype));
      if (r.input_info.packed()) {
        const SequenceStats st = sequence_stats(r.lengths);
        std::printf(
            "sequences: %lld packed (%s), query lengths min %lld, median %lld, mean %.1f, max "
            "%lld%s\n",
            static_cast<long long>(st.count), r.input_info.cu_q.name.c_str(),
            static_cast<long long>(st.min), static_cast<long long>(st.median), st.mean,
            static_cast<long long>(st.max),
            st.empty ? (", " + std::to_string(st.empty) + " empty").c_str() : "");
      }
      if (r.backward && r.backward_ok)
        std::printf("backward: OK (%s %s%s)\n", kDoDataset,
                    dtype_name(r.backward_info.dtype_of(InputTensor::d_o)),
                    r.reuse_forward ? "; o and lse for --reuse-forward" : "");
      else if (r.backward)
        std::printf("backward: NOT USABLE: %s\n", r.backward_error.c_str());
    } else {
      std::printf("input: NOT USABLE: %s\n", r.input_error.c_str());
    }
  }
  if (r.output) {
    std::string grads;
    for (const auto& g : r.gradients) grads += (grads.empty() ? "" : ", ") + g;
    std::printf("output: %s%s\n",
                r.complete ? "complete"
                           : "INCOMPLETE (no complete = 1 attribute: the run that wrote it did "
                             "not finish)",
                grads.empty() ? "" : ("; gradients " + grads).c_str());
  }
}

int info(const InfoFlags& f) {
  const H5FileDesc d = describe_h5_file(f.path, H5DescribeWhat{}, "file '" + f.path + "'");
  const Roles r = roles_of(d);
  if (f.json)
    print_json(d, r);
  else
    print_text(d, r);
  return kOk;
}

}  // namespace

std::function<int(MpiSession&)> add_info(CLI::App& app) {
  auto f = std::make_shared<InfoFlags>();
  CLI::App* c = app.add_subcommand(
      "info",
      "Describe an HDF5 file: each root dataset (shape, type, layout, chunks, filters), the root "
      "attributes (a run's `config` as JSON), for an input (q, k, v) the validation verdict of "
      "`run` (with a `do`, also that of `run --backward`, and of --reuse-forward when o and lse "
      "are there), for an output (o) whether it is complete and which gradients (dq, dk, dv) it "
      "holds. Exit 0 when the file could be described "
      "(an input that fails validation included), 3 when it is not HDF5 or is damaged, 4 when "
      "it is missing, not a regular file, unreadable or locked by a writer.");
  c->add_option("file", f->path, "HDF5 file")->required();
  c->add_flag("--json", f->json, "Print one JSON object instead of text");
  return [f](MpiSession& mpi) { return on_rank0(mpi, [&] { return info(*f); }); };
}

}  // namespace ringattn::cli
