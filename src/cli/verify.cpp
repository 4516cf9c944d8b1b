// `ringattn verify --input IN --output OUT`: binds the flags to a
// VerifyRequest, runs the engine (job/verify.hpp) on rank 0 and prints its
// report. Under mpirun the other ranks wait and return rank 0's exit code.
//
// Includes: cli/commands.hpp, cli/mpi_session.hpp,
// job/setting.hpp (the number checks run's settings use), job/verify.hpp.
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cli/commands.hpp"
#include "cli/mpi_session.hpp"
#include "core/error.hpp"
#include "job/setting.hpp"
#include "job/verify.hpp"

namespace ringattn::cli {
namespace {

struct VerifyFlags {
  VerifyRequest req;
  std::string rows_text = "256";  // --rows as given, checked before any work
  std::string tolerance_text;     // --tolerance as given, checked before any work
  CLI::App* app = nullptr;
};

long long ll(std::int64_t x) {
  return static_cast<long long>(x);
}

// What is checked: printed before the check, which may take long.
void print_plan(const VerifyRequest& q, const VerifyReport& r) {
  const AttnShape& s = r.shape;
  std::printf("verify: %s against %s\n", q.output.c_str(), q.input.c_str());
  std::printf(
      "  run     %s%s%s, scale %.9g, compute %s, o %s [%lld, %lld, %lld, %lld]%s\n",
      r.causal ? "causal" : "non-causal",
      r.window.bounded() ? (", window " + r.window.text()).c_str() : "",
      r.documents > 1 ? (", " + std::to_string(r.documents) + " packed sequences").c_str() : "",
      static_cast<double>(r.scale), r.compute.c_str(), dtype_name(r.o_dtype), ll(s.batch),
      ll(s.heads_q), ll(s.tokens_q), ll(s.head_dim), r.has_lse ? ", lse f32" : ", no lse");
  if (r.input_changed)
    std::printf(
        "  note    the input's size or modification time differs from what the run recorded\n");
  if (r.all_rows)
    std::printf("  rows    all %lld (b, h, i) rows\n", ll(r.rows_total));
  else
    std::printf("  rows    %lld of %lld (b, h, i) rows, sampled uniformly (seed %llu)\n",
                ll(r.rows_checked), ll(r.rows_total), static_cast<unsigned long long>(q.seed));
  if (r.gradients) {
    std::printf("  grads   dq on those rows, dO from the input's '%s' (%s)\n", r.do_name.c_str(),
                dtype_name(r.do_dtype));
    if (r.all_key_rows)
      std::printf(
          "  keys    dk, dv on all %lld (b, kv head, j) key rows, given the run's o and lse\n",
          ll(r.key_rows_total));
    else
      std::printf(
          "  keys    dk, dv on %lld of %lld (b, kv head, j) key rows, sampled uniformly (seed "
          "%llu), given the run's o and lse\n",
          ll(r.key_rows_checked), ll(r.key_rows_total), static_cast<unsigned long long>(q.seed));
  }
  std::fflush(stdout);
}

void print_verdict(const VerifyReport& r) {
  const WorstError& o = r.o;
  std::printf(
      "  o       max |o - ref| / max |ref| = %.3e (max |ref| %.6g); worst o[%lld, %lld, %lld, "
      "%lld] = %.9g, reference %.9g\n",
      o.rel(), o.scale, ll(o.b), ll(o.h), ll(o.i), ll(o.d), o.value, o.ref);
  if (r.has_lse)
    std::printf(
        "  lse     max |lse - ref| = %.3e (limit %.3e = %.0e x max(1, max |ref|)); worst "
        "lse[%lld, %lld, %lld] = %.9g, reference %.9g\n",
        r.lse.max_abs, r.lse_limit, r.lse_tolerance, ll(r.lse.b), ll(r.lse.h), ll(r.lse.i),
        r.lse.value, r.lse.ref);
  if (r.gradients) {
    const struct {
      const char* name;
      const WorstError& w;
      const char* note;
    } grads[] = {{"dq", r.dq, ""},
                 {"dk", r.dk, " (given the run's o and lse)"},
                 {"dv", r.dv, " (given the run's o and lse)"}};
    for (const auto& g : grads)
      std::printf(
          "  %s      max |%s - ref| / max(max |ref|, floor) = %.3e (max |ref| %.6g, floor "
          "%.3g)%s; worst %s[%lld, %lld, %lld, %lld] = %.9g, reference %.9g\n",
          g.name, g.name, g.w.rel(), g.w.scale, g.w.floor, g.note, g.name, ll(g.w.b), ll(g.w.h),
          ll(g.w.i), ll(g.w.d), g.w.value, g.w.ref);
  }
  std::printf("  tol     %.0e (%s)", r.tolerance, r.why.c_str());
  if (r.has_lse && r.lse_tolerance != r.tolerance)
    std::printf("; lse %.0e (f32 whatever o's type)", r.lse_tolerance);
  if (r.gradients) std::printf("; gradients %.0e (%s)", r.grad_tolerance, r.grad_why.c_str());
  std::printf("\n");
  // The tensors beyond tolerance: "o", "o and lse", "o, dq and dk".
  std::vector<const char*> bad;
  for (const auto& [name, ok] :
       {std::pair{"o", r.o_ok}, std::pair{"lse", r.lse_ok}, std::pair{"dq", r.dq_ok},
        std::pair{"dk", r.dk_ok}, std::pair{"dv", r.dv_ok}})
    if (!ok) bad.push_back(name);
  std::string which;
  for (std::size_t i = 0; i < bad.size(); ++i)
    which += std::string(i == 0 ? "" : i + 1 == bad.size() ? " and " : ", ") + bad[i];
  std::printf("verify: %s%s (%.2f s, %d threads)\n", r.ok() ? "PASS" : "FAIL",
              r.ok() ? "" : (": " + which + " beyond tolerance").c_str(), r.seconds, r.threads);
}

int verify(const VerifyFlags& f) {
  Verifier v(f.req);
  print_plan(f.req, v.report());
  const VerifyReport& r = v.check();
  print_verdict(r);
  return r.ok() ? kOk : kFailure;
}

}  // namespace

std::function<int(MpiSession&)> add_verify(CLI::App& app) {
  auto f = std::make_shared<VerifyFlags>();
  CLI::App* c = app.add_subcommand(
      "verify",
      "Check a finished run's output against a float64 recomputation: all rows when B*H*N <= "
      "4096 or --rows 0, else --rows rows sampled uniformly over (b, h, i). Causal, scale, "
      "compute and dataset names come from the output's attributes. Reports max |o - ref| / "
      "max |ref| and, when lse was written, max |lse - ref|, with the worst element. A "
      "backward run's output (gradients = 1) has dq checked on the same rows and dk, dv on as "
      "many sampled key rows, given the run's o and lse. Exit 0 within tolerance, 1 beyond it, "
      "3 when the output is incomplete or not ringattn's.");
  f->app = c;
  c->add_option("--input,-i", f->req.input, "The input the run read")->required();
  c->add_option("--output,-o", f->req.output, "The output the run wrote")->required();
  c->add_option("--rows", f->rows_text, "Rows to check; 0: all")
      ->capture_default_str()
      ->type_name("INT");
  c->add_option("--tolerance", f->tolerance_text,
                "Largest accepted error [default: 1e-5; 1e-3 for an f16 o; 2e-2 for compute "
                "bf16; gradients 1e-4, 1e-3 for an f16 o]")
      ->type_name("NUMBER");
  c->add_option("--seed", f->req.seed, "Seed of the row sample")->capture_default_str();
  return [f](MpiSession& mpi) {
    return on_rank0(mpi, [&] {
      // The same parse and messages as run's settings (job/setting.hpp).
      f->req.rows = checked_integer_from_text(f->rows_text, "--rows", {.lo = 0});
      if (f->app->count("--tolerance") > 0)
        f->req.tolerance =
            checked_number_from_text(f->tolerance_text, "--tolerance", {.lo = 0, .above = true});
      return verify(*f);
    });
  };
}

}  // namespace ringattn::cli
