// `ringattn verify --input IN --output OUT`: recomputes rows of a finished
// run's output in float64 (kernel/reference.hpp) and says whether `o` (and
// `lse`, when written) agree within a tolerance. The run's own attributes
// say what to recompute (causal, scale, compute, dataset names), so a result
// can be checked long after, by someone who did not launch it.
//
// All rows are checked when there are few (B·H·N <= 4096) or when asked
// (--rows 0); otherwise K rows drawn uniformly over (b, h, i), the same ones
// for the same --seed. Only what those rows need is read: the sampled q, o
// and lse rows, and the whole K/V of the heads involved, one (b, kv head)
// plane at a time. One process verifies; under mpirun the other ranks wait.
//
// Includes: cli/commands.hpp, cli/mpi_session.hpp, core/seeded_data.hpp
// (splitmix64: the sample), core/timer.hpp, comm/agree.hpp, io/h5_describe.hpp
// (the output's description, row reads), io/input_file.hpp (inspect_input),
// io/output_file.hpp (kCompleteAttribute), job/setting.hpp (the number check),
// kernel/reference.hpp.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <unordered_set>
#include <variant>
#include <vector>

#include "cli/commands.hpp"
#include "cli/mpi_session.hpp"
#include "comm/agree.hpp"
#include "core/error.hpp"
#include "core/seeded_data.hpp"
#include "core/timer.hpp"
#include "io/h5_describe.hpp"
#include "io/input_file.hpp"
#include "io/output_file.hpp"
#include "job/setting.hpp"
#include "kernel/reference.hpp"

namespace ringattn::cli {
namespace {

// At most this many rows in all: every row is checked.
constexpr std::int64_t kAllRowsUpTo = 4096;
// Rows of one head recomputed per block (bounds the memory of a full check).
constexpr std::size_t kBlockRows = 4096;
// Rows per reference call: the unit the threads share out.
constexpr std::size_t kPieceRows = 8;

constexpr double kTolF32 = 1e-5;   // o f32, compute f32: fp32 accumulation against float64
constexpr double kTolF16 = 1e-3;   // o stored in f16: its rounding is 2^-11 relative
constexpr double kTolBf16 = 2e-2;  // compute bf16: products of bf16-rounded operands

struct VerifyFlags {
  std::string input, output;
  std::string rows_text = "256";  // --rows as given, checked before any work
  std::int64_t rows = 256;
  std::string tolerance_text;  // --tolerance as given, checked before any work
  double tolerance = 0;
  std::uint64_t seed = 1;
  CLI::App* app = nullptr;
};

// What the output's attributes say the run computed.
struct RunFacts {
  bool causal = false;
  float scale = 0;  // the kernel's float scale, stored as double
  std::string compute;
  InputNames names;
  DType o_dtype = DType::f32;
  bool has_lse = false;
};

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
  return f;
}

// Where in the output a row is.
struct RowIndex {
  std::int64_t b, h, i;
};

// The checked rows as flat indices (b·H + h)·N + i, ascending: K distinct
// ones uniform over [0, total) (Floyd's algorithm: exactly K draws), or all.
std::vector<std::int64_t> choose_rows(std::int64_t total, std::int64_t k, std::uint64_t seed) {
  std::vector<std::int64_t> rows;
  if (k <= 0 || k >= total) {
    rows.resize(static_cast<std::size_t>(total));
    for (std::int64_t r = 0; r < total; ++r) rows[static_cast<std::size_t>(r)] = r;
    return rows;
  }
  std::unordered_set<std::int64_t> chosen;
  chosen.reserve(static_cast<std::size_t>(2 * k));
  const std::uint64_t key = splitmix64(seed);
  for (std::int64_t j = total - k; j < total; ++j) {
    const auto r = static_cast<std::int64_t>(splitmix64(key ^ static_cast<std::uint64_t>(j)) %
                                             static_cast<std::uint64_t>(j + 1));
    if (!chosen.insert(r).second) chosen.insert(j);
  }
  rows.assign(chosen.begin(), chosen.end());
  std::sort(rows.begin(), rows.end());
  return rows;
}

// Runs of consecutive rows as position segments (causal masking reads them).
Positions positions_of(const std::int64_t* rows, std::size_t n) {
  Positions p;
  for (std::size_t i = 0; i < n;) {
    std::size_t j = i + 1;
    while (j < n && rows[j] == rows[j - 1] + 1) ++j;
    p.append({rows[i], 1, static_cast<std::int64_t>(j - i)});
    i = j;
  }
  return p;
}

// The largest error over every checked block, and where it was.
struct Worst {
  double max_abs = 0;
  double scale = 0;  // max |ref|
  bool any = false;
  RowIndex at{0, 0, 0};
  std::int64_t d = 0;
  double value = 0, ref = 0;

  void add(const Comparison& c, const std::int64_t* rows, std::int64_t b, std::int64_t h,
           std::int64_t width) {
    scale = std::max(scale, c.scale);
    if (c.worst < 0 || (any && !(c.max_abs_err > max_abs))) return;
    any = true;
    max_abs = c.max_abs_err;
    at = {b, h, rows[c.worst / width]};
    d = c.worst % width;
    value = c.worst_value;
    ref = c.worst_ref;
  }
  double rel() const { return max_abs / std::max(scale, 1e-30); }
};

int verify(const VerifyFlags& f) {
  Timer wall;
  // Both files are described in a child process first (io/h5_describe.hpp),
  // as `run` describes its input: a damaged one is one line, exit 3.
  const std::string octx = "output file '" + f.output + "'";
  const H5FileDesc od = describe_h5_file(f.output, H5DescribeWhat{}, octx);
  const RunFacts run = read_facts(od);
  const InputInfo in = inspect_input(MPI_COMM_SELF, f.input, run.names);
  const AttnShape s = in.shape();
  const std::int64_t B = s.batch, H = s.heads_q, HK = s.heads_kv, N = s.tokens_q, NK = s.tokens_kv,
                     D = s.head_dim;
  const std::vector<std::int64_t> o_dims{B, H, N, D}, lse_dims{B, H, N};
  RA_CHECK(od.dataset("o")->dims == o_dims, input, octx,
           ": dataset 'o' is not shaped like the input's q [", B, ", ", H, ", ", N, ", ", D,
           "]; not an output of this input");
  if (run.has_lse)
    RA_CHECK(od.dataset("lse")->dims == lse_dims, input, octx,
             ": dataset 'lse' is not shaped [B, H, N] = [", B, ", ", H, ", ", N, "]");

  std::printf("verify: %s against %s\n", f.output.c_str(), f.input.c_str());
  std::printf("  run     %s, scale %.9g, compute %s, o %s [%lld, %lld, %lld, %lld]%s\n",
              run.causal ? "causal" : "non-causal", static_cast<double>(run.scale),
              run.compute.c_str(), dtype_name(run.o_dtype), static_cast<long long>(B),
              static_cast<long long>(H), static_cast<long long>(N), static_cast<long long>(D),
              run.has_lse ? ", lse f32" : ", no lse");
  // The input the run recorded, against the one given (a changed input
  // shows up as errors; say so before the numbers do).
  const auto* rec_size = od.attribute("input_size");
  const auto* rec_mtime = od.attribute("input_mtime_ns");
  const auto int_of = [](const H5AttributeDesc* a) {
    const auto* v = a && !a->summary ? std::get_if<std::int64_t>(&a->value) : nullptr;
    return v ? *v : -1;
  };
  if ((rec_size && int_of(rec_size) != in.file.size) ||
      (rec_mtime && int_of(rec_mtime) != in.file.mtime_ns))
    std::printf(
        "  note    the input's size or modification time differs from what the run recorded\n");

  const std::int64_t total = B * H * N;
  const bool all = f.rows == 0 || total <= kAllRowsUpTo || f.rows >= total;
  const std::vector<std::int64_t> flat = choose_rows(total, all ? 0 : f.rows, f.seed);
  if (all)
    std::printf("  rows    all %lld (b, h, i) rows\n", static_cast<long long>(total));
  else
    std::printf("  rows    %zu of %lld (b, h, i) rows, sampled uniformly (seed %llu)\n",
                flat.size(), static_cast<long long>(total),
                static_cast<unsigned long long>(f.seed));

  H5RowReader input(f.input), output(f.output);
  const std::size_t es = dtype_size(in.dtype);
  const std::int64_t group = H / HK;
  std::vector<char> k(static_cast<std::size_t>(NK * D) * es), v(k.size());  // (NK, D) each
  std::vector<char> q;                                                      // (rows, D)
  std::vector<char> o_raw;                                                  // (rows, D) stored
  std::vector<float> o, lse;                                                // (rows, D), (rows)
  std::vector<double> ref_o, ref_lse;                                       // the same, float64
  Worst wo, wl;

  // flat is sorted, so its rows come plane by plane: [lo, group_end) are the
  // rows that read K/V plane (b, hk), and [lo, hi) one block of one head.
  std::size_t lo = 0;
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t hk = 0; hk < HK; ++hk) {
      const std::int64_t plane_end = (b * H + (hk + 1) * group) * N;
      std::size_t group_end = lo;
      while (group_end < flat.size() && flat[group_end] < plane_end) ++group_end;
      if (group_end == lo) continue;  // no checked row needs this K/V
      input.read_plane(run.names.k, b, hk, in.dtype, k.data());
      input.read_plane(run.names.v, b, hk, in.dtype, v.data());
      while (lo < group_end) {
        const std::int64_t h = flat[lo] / N % H;
        std::size_t hi = lo;
        std::vector<std::int64_t> rows;  // this head's rows
        while (hi < group_end && flat[hi] / N % H == h && rows.size() < kBlockRows)
          rows.push_back(flat[hi++] % N);
        const std::size_t n = rows.size();
        const std::size_t nd = n * static_cast<std::size_t>(D);
        q.resize(nd * es);
        o_raw.resize(nd * dtype_size(run.o_dtype));
        o.resize(nd);
        ref_o.resize(nd);
        lse.resize(n);
        ref_lse.resize(n);
        input.read_rows(run.names.q, b, h, rows, in.dtype, q.data());
        output.read_rows("o", b, h, rows, run.o_dtype, o_raw.data());
        load_f32(o_raw.data(), run.o_dtype, o.data(), nd);
        if (run.has_lse) output.read_rows("lse", b, h, rows, DType::f32, lse.data());

        // The float64 reference, a piece of rows per call, pieces over threads.
        const std::int64_t pieces = static_cast<std::int64_t>((n + kPieceRows - 1) / kPieceRows);
        bool failed = false;
#pragma omp parallel for schedule(dynamic)
        for (std::int64_t p = 0; p < pieces; ++p) {
          const std::size_t r0 = static_cast<std::size_t>(p) * kPieceRows;
          const std::size_t rn = std::min(kPieceRows, n - r0);
          try {
            AttnParams a = AttnParams::dense(q.data() + r0 * static_cast<std::size_t>(D) * es,
                                             k.data(), v.data(), in.dtype, 1, 1, 1,
                                             static_cast<std::int64_t>(rn), NK, D);
            a.scale = run.scale;
            a.causal = run.causal;
            a.q_pos = positions_of(rows.data() + r0, rn);
            reference_attention(a, ref_o.data() + r0 * static_cast<std::size_t>(D),
                                ref_lse.data() + r0);
          } catch (...) {
#pragma omp atomic write
            failed = true;
          }
        }
        RA_CHECK(!failed, internal, "the float64 reference failed on plane (", b, ", ", h, ")");
        wo.add(compare_to_reference(o.data(), ref_o.data(), static_cast<std::int64_t>(nd)),
               rows.data(), b, h, D);
        if (run.has_lse)
          wl.add(compare_to_reference(lse.data(), ref_lse.data(), static_cast<std::int64_t>(n)),
                 rows.data(), b, h, 1);
        lo = hi;
      }
    }

  double tol = kTolF32;
  std::string why = "default for o f32 and compute f32: fp32 accumulation against float64";
  const bool given = f.app->count("--tolerance") > 0;
  if (given) {
    tol = f.tolerance;
    why = "given with --tolerance";
  } else if (run.compute == "bf16") {
    tol = kTolBf16;
    why = "default for compute bf16: q, k, probabilities and v rounded to bf16 before the products";
  } else if (run.o_dtype == DType::f16) {
    tol = kTolF16;
    why = "default for an f16 o: half-precision rounding of o, 2^-11 relative";
  }
  // lse is f32 whatever o's type: only the compute type loosens it.
  const double lse_tol = given || run.compute == "bf16" ? tol : kTolF32;
  const bool o_ok = wo.rel() <= tol;
  std::printf(
      "  o       max |o - ref| / max |ref| = %.3e (max |ref| %.6g); worst o[%lld, %lld, %lld, "
      "%lld] = %.9g, reference %.9g\n",
      wo.rel(), wo.scale, static_cast<long long>(wo.at.b), static_cast<long long>(wo.at.h),
      static_cast<long long>(wo.at.i), static_cast<long long>(wo.d), wo.value, wo.ref);
  bool lse_ok = true;
  if (run.has_lse) {
    // lse grows like log N: its error is judged against max(1, max |lse|).
    const double lse_limit = lse_tol * std::max(1.0, wl.scale);
    lse_ok = wl.max_abs <= lse_limit;
    std::printf(
        "  lse     max |lse - ref| = %.3e (limit %.3e = %.0e x max(1, max |ref|)); worst "
        "lse[%lld, %lld, %lld] = %.9g, reference %.9g\n",
        wl.max_abs, lse_limit, lse_tol, static_cast<long long>(wl.at.b),
        static_cast<long long>(wl.at.h), static_cast<long long>(wl.at.i), wl.value, wl.ref);
  }
  std::printf("  tol     %.0e (%s)", tol, why.c_str());
  if (run.has_lse && lse_tol != tol) std::printf("; lse %.0e (f32 whatever o's type)", lse_tol);
  std::printf("\n");
  const bool ok = o_ok && lse_ok;
  std::printf("verify: %s%s (%.2f s, %d threads)\n", ok ? "PASS" : "FAIL",
              ok                 ? ""
              : !o_ok && !lse_ok ? ": o and lse beyond tolerance"
              : !o_ok            ? ": o beyond tolerance"
                                 : ": lse beyond tolerance",
              wall.seconds(), omp_get_max_threads());
  return ok ? kOk : kFailure;
}

}  // namespace

std::function<int(MpiSession&)> add_verify(CLI::App& app) {
  auto f = std::make_shared<VerifyFlags>();
  CLI::App* c = app.add_subcommand(
      "verify",
      "Check a finished run's output against a float64 recomputation: all rows when B*H*N <= "
      "4096 or --rows 0, else --rows rows sampled uniformly over (b, h, i). Causal, scale, "
      "compute and dataset names come from the output's attributes. Reports max |o - ref| / "
      "max |ref| and, when lse was written, max |lse - ref|, with the worst element. Exit 0 "
      "within tolerance, 1 beyond it, 3 when the output is incomplete or not ringattn's.");
  f->app = c;
  c->add_option("--input,-i", f->input, "The input the run read")->required();
  c->add_option("--output,-o", f->output, "The output the run wrote")->required();
  c->add_option("--rows", f->rows_text, "Rows to check; 0: all")
      ->capture_default_str()
      ->type_name("INT");
  c->add_option("--tolerance", f->tolerance_text,
                "Largest accepted error [default: 1e-5; 1e-3 for an f16 o; 2e-2 for compute "
                "bf16]")
      ->type_name("NUMBER");
  c->add_option("--seed", f->seed, "Seed of the row sample")->capture_default_str();
  return [f](MpiSession& mpi) {
    int code = kOk;
    agree(MPI_COMM_WORLD, [&] {
      // The same parse and messages as run's settings (job/setting.hpp).
      f->rows = checked_integer_from_text(f->rows_text, "--rows", {.lo = 0});
      if (f->app->count("--tolerance") > 0)
        f->tolerance =
            checked_number_from_text(f->tolerance_text, "--tolerance", {.lo = 0, .above = true});
      if (mpi.rank() == 0) code = verify(*f);
    });
    RA_MPI_CHECK(MPI_Bcast(&code, 1, MPI_INT, 0, MPI_COMM_WORLD));
    return code;
  };
}

}  // namespace ringattn::cli
