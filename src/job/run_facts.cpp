// Reading a run's facts from its output (see run_facts.hpp).
#include "job/run_facts.hpp"

#include <cmath>
#include <optional>
#include <variant>
#include <vector>

#include "core/error.hpp"
#include "io/output_file.hpp"

namespace ringattn {
namespace {

template <class T>
const T& required_attr(const H5FileDesc& d, const std::string& name, const char* kind) {
  const std::string ctx = "output file '" + d.path + "'";
  const H5AttributeDesc* a = d.attribute(name);
  RA_CHECK(a != nullptr, input, ctx, ": lacks the attribute '", name,
           "' that ringattn run writes; cannot tell what to recompute");
  const T* v = a->summary ? nullptr : std::get_if<T>(&a->value);
  RA_CHECK(v != nullptr, input, ctx, ": attribute '", name, "' is not ", kind);
  return *v;
}

std::string dims_text(const std::vector<std::int64_t>& dims) {
  std::string t = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) t += (i ? ", " : "") + std::to_string(dims[i]);
  return t + "]";
}

}  // namespace

RunFacts read_facts(const H5FileDesc& d) {
  const std::string ctx = "output file '" + d.path + "'";
  const H5DatasetDesc* o = d.dataset("o");
  RA_CHECK(o != nullptr, input, ctx, ": has no dataset 'o'; not an output of ringattn run",
           d.dataset("q") ? " (it looks like an input: pass it with --input)" : "");
  const H5AttributeDesc* c = d.attribute(kCompleteAttribute);
  const auto* done = c && !c->summary ? std::get_if<std::int64_t>(&c->value) : nullptr;
  RA_CHECK(done && *done == 1, input, ctx,
           ": not complete (no complete = 1 attribute); the run that wrote it did not finish");
  RunFacts f;
  const std::int64_t causal = required_attr<std::int64_t>(d, "causal", "an integer");
  RA_CHECK(causal == 0 || causal == 1, input, ctx, ": attribute 'causal' is ", causal,
           ", not 0 or 1");
  f.causal = causal == 1;
  if (const H5AttributeDesc* w = d.attribute("window")) {
    const std::string* text = w->summary ? nullptr : std::get_if<std::string>(&w->value);
    const std::optional<Window> window = text ? Window::from_text(*text) : std::nullopt;
    RA_CHECK(window, input, ctx, ": attribute 'window' is not a window (\"none\", L or L,R)");
    f.window = *window;
  }
  if (const H5AttributeDesc* n = d.attribute("documents")) {
    const auto* count = n->summary ? nullptr : std::get_if<std::int64_t>(&n->value);
    RA_CHECK(count && *count >= 1, input, ctx,
             ": attribute 'documents' is not a sequence count (an integer >= 1)");
    f.documents = *count;
  }
  const double scale = required_attr<double>(d, "scale", "a float");
  RA_CHECK(std::isfinite(scale) && scale > 0, input, ctx, ": attribute 'scale' is ", scale,
           ", not a positive number");
  f.scale = static_cast<float>(scale);
  f.compute = required_attr<std::string>(d, "compute", "text");
  RA_CHECK(f.compute == "f32" || f.compute == "bf16", input, ctx, ": attribute 'compute' is '",
           f.compute, "', not f32 or bf16");
  f.names.q = required_attr<std::string>(d, "q_dataset", "text");
  f.names.k = required_attr<std::string>(d, "k_dataset", "text");
  f.names.v = required_attr<std::string>(d, "v_dataset", "text");
  RA_CHECK(o->type.name == "f32" || o->type.name == "f16", input, ctx, ": dataset 'o' holds ",
           o->type.name, " elements; expected f32 or f16");
  f.o_dtype = parse_dtype(o->type.name);
  f.has_lse = d.dataset("lse") != nullptr;
  if (const H5AttributeDesc* g = d.attribute("gradients")) {
    const auto* v = g->summary ? nullptr : std::get_if<std::int64_t>(&g->value);
    RA_CHECK(v && (*v == 0 || *v == 1), input, ctx, ": attribute 'gradients' is not 0 or 1");
    f.gradients = *v == 1;
  }
  if (f.gradients) {
    f.do_name = required_attr<std::string>(d, "do_dataset", "text");
    f.names.d_o = f.do_name;  // inspect_input checks the input's dO as run does
    // dk and dv are checked against the run's lse: a backward run always writes it.
    for (const char* name : {"lse", "dq", "dk", "dv"}) {
      const H5DatasetDesc* g = d.dataset(name);
      RA_CHECK(g != nullptr, input, ctx, ": has gradients = 1 but no dataset '", name,
               "'; a backward run of ringattn run writes o, lse, dq, dk and dv");
      RA_CHECK(g->type.name == "f32", input, ctx, ": dataset '", name, "' holds ", g->type.name,
               " elements; a backward run writes f32");
    }
  }
  return f;
}

// The output's datasets are shaped for this input.
void check_shapes(const H5FileDesc& od, const RunFacts& run, const AttnShape& s) {
  const std::string octx = "output file '" + od.path + "'";
  const std::vector<std::int64_t> o_dims{s.batch, s.heads_q, s.tokens_q, s.head_dim},
      lse_dims{s.batch, s.heads_q, s.tokens_q},
      kv_dims{s.batch, s.heads_kv, s.tokens_kv, s.head_dim};
  RA_CHECK(od.dataset("o")->dims == o_dims, input, octx,
           ": dataset 'o' is not shaped like the input's q [", s.batch, ", ", s.heads_q, ", ",
           s.tokens_q, ", ", s.head_dim, "]; not an output of this input");
  if (run.has_lse)
    RA_CHECK(od.dataset("lse")->dims == lse_dims, input, octx,
             ": dataset 'lse' is not shaped [B, H, N] = [", s.batch, ", ", s.heads_q, ", ",
             s.tokens_q, "]");
  if (!run.gradients) return;
  const std::vector<std::int64_t>& dq = od.dataset("dq")->dims;
  RA_CHECK(dq == o_dims, input, octx, ": dataset 'dq' is ", dims_text(dq),
           ", not shaped like the input's q ", dims_text(o_dims), "; not an output of this input");
  for (const char* name : {"dk", "dv"}) {
    const std::vector<std::int64_t>& g = od.dataset(name)->dims;
    RA_CHECK(g == kv_dims, input, octx, ": dataset '", name, "' is ", dims_text(g),
             ", not shaped like the input's k ", dims_text(kv_dims),
             "; not an output of this input");
  }
}

}  // namespace ringattn
