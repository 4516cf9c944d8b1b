// Verifying a finished run (see verify.hpp).
#include "job/verify.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_set>
#include <variant>
#include <vector>

#include "core/error.hpp"
#include "core/message_text.hpp"
#include "core/positions.hpp"
#include "core/seeded_data.hpp"
#include "core/timer.hpp"
#include "io/h5_describe.hpp"
#include "io/input_file.hpp"
#include "io/output_file.hpp"
#include "job/run_facts.hpp"
#include "kernel/reference.hpp"

namespace ringattn {
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
constexpr double kTolGrad = 1e-4;  // fp32 gradients (sums over every key or query) against float64

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

void add(WorstError& w, const Comparison& c, const std::int64_t* rows, std::int64_t b,
         std::int64_t h, std::int64_t width) {
  w.scale = std::max(w.scale, c.scale);
  if (c.worst < 0 || (w.any && !(c.max_abs_err > w.max_abs))) return;
  w.any = true;
  w.max_abs = c.max_abs_err;
  w.b = b;
  w.h = h;
  w.i = rows[c.worst / width];
  w.d = c.worst % width;
  w.value = c.worst_value;
  w.ref = c.worst_ref;
}

// The input the run recorded, against the one given (a changed input shows
// up as errors; the report says so before the numbers do).
bool input_changed(const H5FileDesc& od, const InputInfo& in) {
  const auto int_of = [](const H5AttributeDesc* a) {
    const auto* v = a && !a->summary ? std::get_if<std::int64_t>(&a->value) : nullptr;
    return v ? *v : -1;
  };
  const auto* size = od.attribute("input_size");
  const auto* mtime = od.attribute("input_mtime_ns");
  return (size && int_of(size) != in.file.size) || (mtime && int_of(mtime) != in.file.mtime_ns);
}

// The largest |x| of n elements of type t (NaN ignored: the comparison
// itself fails on it).
double max_abs(const void* data, DType t, std::size_t n) {
  double m = 0;
  for (std::size_t i = 0; i < n; ++i)
    m = std::max(m, std::fabs(static_cast<double>(element_f32(data, t, i))));
  return m;
}

// A dense (n, D) block's coordinates as a vector (Positions index by search).
std::vector<std::int64_t> coordinates(const Positions& p) {
  std::vector<std::int64_t> c(static_cast<std::size_t>(p.size()));
  p.fill(0, p.size(), c.data());
  return c;
}

// Recomputes, compares and accumulates the checked rows: K/V one (b, kv head)
// plane at a time, q/o/lse (and dO, dq) one block of one head's rows at a
// time; then, for a backward run, the checked key rows' dk and dv, one
// plane at a time over blocks of its query heads' rows.
class RowChecker {
 public:
  RowChecker(const VerifyRequest& req, const RunFacts& run, const InputInfo& in,
             const Documents& docs, DType do_dtype)
      : run_(run),
        in_(in),
        docs_(docs),
        window_(docs.window(run.window)),
        vis_(Visibility::of(run.causal, window_)),
        k_pos_(docs.k_coordinates(Positions::contiguous(0, in.shape.tokens_kv))),
        s_(in.shape),
        es_(dtype_size(in.dtype)),
        do_dtype_(do_dtype),
        input_(req.input),
        output_(req.output),
        k_(static_cast<std::size_t>(s_.tokens_kv * s_.head_dim) * es_),
        v_(k_.size()) {
    if (run_.gradients) k_coord_ = coordinates(k_pos_);
  }

  // flat: sorted (b·H + h)·N + i. Its rows come plane by plane: [lo,
  // plane_end) read K/V plane (b, hk).
  void check(const std::vector<std::int64_t>& flat, WorstError& wo, WorstError& wl,
             WorstError& wdq) {
    const std::int64_t group = s_.heads_q / s_.heads_kv, N = s_.tokens_q;
    std::size_t lo = 0;
    for (std::int64_t b = 0; b < s_.batch; ++b)
      for (std::int64_t hk = 0; hk < s_.heads_kv; ++hk) {
        const std::int64_t plane_end = (b * s_.heads_q + (hk + 1) * group) * N;
        std::size_t end = lo;
        while (end < flat.size() && flat[end] < plane_end) ++end;
        if (end == lo) continue;  // no checked row needs this K/V
        read_kv_plane(b, hk);
        while (lo < end) {
          const std::int64_t h = flat[lo] / N % s_.heads_q;
          std::vector<std::int64_t> rows;  // this head's rows, one block
          while (lo < end && flat[lo] / N % s_.heads_q == h && rows.size() < kBlockRows)
            rows.push_back(flat[lo++] % N);
          check_block(b, h, rows, wo, wl, wdq);
        }
      }
  }

  // flat: sorted (b·H_kv + hk)·N_k + j, the checked key rows.
  void check_keys(const std::vector<std::int64_t>& flat, WorstError& wk, WorstError& wv) {
    const std::int64_t NK = s_.tokens_kv;
    for (std::size_t lo = 0; lo < flat.size();) {
      const std::int64_t plane = flat[lo] / NK;
      std::vector<std::int64_t> keys;  // this plane's key rows
      while (lo < flat.size() && flat[lo] / NK == plane) keys.push_back(flat[lo++] % NK);
      check_key_plane(plane / s_.heads_kv, plane % s_.heads_kv, keys, wk, wv);
    }
  }

 private:
  void read_kv_plane(std::int64_t b, std::int64_t hk) {
    input_.read_plane(run_.names.k, b, hk, in_.dtype, k_.data());
    input_.read_plane(run_.names.v, b, hk, in_.dtype, v_.data());
    if (!run_.gradients) return;
    const auto n = static_cast<std::size_t>(s_.tokens_kv * s_.head_dim);
    kmax_ = max_abs(k_.data(), in_.dtype, n);
    vmax_ = max_abs(v_.data(), in_.dtype, n);
  }

  // Rows of plane (b, h) of `name` as f32 (rows.size(), width): read in
  // `stored`, widened.
  void read_f32(H5RowReader& r, const std::string& name, std::int64_t b, std::int64_t h,
                const std::vector<std::int64_t>& rows, DType stored, std::size_t count,
                std::vector<float>& out) {
    out.resize(count);
    if (stored == DType::f32) {
      r.read_rows(name, b, h, rows, DType::f32, out.data());
      return;
    }
    raw_.resize(count * dtype_size(stored));
    r.read_rows(name, b, h, rows, stored, raw_.data());
    load_f32(raw_.data(), stored, out.data(), count);
  }

  void check_block(std::int64_t b, std::int64_t h, const std::vector<std::int64_t>& rows,
                   WorstError& wo, WorstError& wl, WorstError& wdq) {
    const std::size_t n = rows.size(), nd = n * static_cast<std::size_t>(s_.head_dim);
    q_.resize(nd * es_);
    ref_o_.resize(nd);
    lse_.resize(n);
    ref_lse_.resize(n);
    input_.read_rows(run_.names.q, b, h, rows, in_.dtype, q_.data());
    read_f32(output_, "o", b, h, rows, run_.o_dtype, nd, o_);
    if (run_.has_lse) output_.read_rows("lse", b, h, rows, DType::f32, lse_.data());
    if (run_.gradients) {
      read_f32(input_, run_.do_name, b, h, rows, do_dtype_, nd, d_o_);
      dq_.resize(nd);
      ref_dq_.resize(nd);
      output_.read_rows("dq", b, h, rows, DType::f32, dq_.data());
    }
    reference(b, h, rows);
    add(wo, compare_to_reference(o_.data(), ref_o_.data(), static_cast<std::int64_t>(nd)),
        rows.data(), b, h, s_.head_dim);
    if (run_.has_lse)
      add(wl, compare_to_reference(lse_.data(), ref_lse_.data(), static_cast<std::int64_t>(n)),
          rows.data(), b, h, 1);
    if (run_.gradients) {
      add(wdq, compare_to_reference(dq_.data(), ref_dq_.data(), static_cast<std::int64_t>(nd)),
          rows.data(), b, h, s_.head_dim);
      wdq.floor = std::max(
          wdq.floor, gradient_error_floor(run_.scale, max_abs(d_o_.data(), DType::f32, nd), vmax_,
                                          max_abs(q_.data(), in_.dtype, nd), kmax_));
    }
  }

  // The float64 reference of one block, a piece of rows per call, pieces
  // over threads; dq from each row's reference o and lse.
  void reference(std::int64_t b, std::int64_t h, const std::vector<std::int64_t>& rows) {
    const std::size_t n = rows.size(), D = static_cast<std::size_t>(s_.head_dim);
    const auto pieces = static_cast<std::int64_t>((n + kPieceRows - 1) / kPieceRows);
    bool failed = false;
#pragma omp parallel for schedule(dynamic)
    for (std::int64_t p = 0; p < pieces; ++p) {
      const std::size_t r0 = static_cast<std::size_t>(p) * kPieceRows;
      const std::size_t rn = std::min(kPieceRows, n - r0);
      try {
        AttnParams a =
            AttnParams::dense(q_.data() + r0 * D * es_, k_.data(), v_.data(), in_.dtype, 1, 1, 1,
                              static_cast<std::int64_t>(rn), s_.tokens_kv, s_.head_dim);
        a.scale = run_.scale;
        a.causal = run_.causal;
        a.window = window_;  // packed documents: masked on their coordinates
        a.q_pos = docs_.q_coordinates(Positions::of_rows(rows.data() + r0, rn));
        a.k_pos = k_pos_;
        reference_attention(a, ref_o_.data() + r0 * D, ref_lse_.data() + r0);
        if (run_.gradients)
          for (std::size_t r = r0; r < r0 + rn; ++r)
            reference_dq_row(r, a.q_pos[static_cast<std::int64_t>(r - r0)]);
      } catch (...) {
#pragma omp atomic write
        failed = true;
      }
    }
    RA_CHECK(!failed, internal, "the float64 reference failed on plane (", b, ", ", h, ")");
  }

  // dq of block row r (at mask coordinate qpos) in float64 from its exact o
  // and lse: D = dO·o; over the keys it sees P = exp(s - lse), dS =
  // scale·P·(dO·v - D), dq = Σ dS·k. A row that sees no key has dq = 0.
  void reference_dq_row(std::size_t r, std::int64_t qpos) {
    const std::int64_t D = s_.head_dim;
    const double scale = run_.scale, lse = ref_lse_[r];
    double* dq = ref_dq_.data() + r * static_cast<std::size_t>(D);
    std::fill_n(dq, D, 0.0);
    if (!std::isfinite(lse)) return;
    const float* g = d_o_.data() + r * static_cast<std::size_t>(D);
    const double* o = ref_o_.data() + r * static_cast<std::size_t>(D);
    std::vector<double> q(static_cast<std::size_t>(D));
    double delta = 0;
    for (std::int64_t d = 0; d < D; ++d) {
      q[d] = element_f32(q_.data(), in_.dtype, r * static_cast<std::size_t>(D) + d);
      delta += static_cast<double>(g[d]) * o[d];
    }
    for (std::int64_t j = 0; j < s_.tokens_kv; ++j) {
      if (!vis_.sees(qpos, k_coord_[j])) continue;
      const auto off = static_cast<std::size_t>(j * D);
      double dot = 0, dp = 0;
      for (std::int64_t d = 0; d < D; ++d) {
        dot += q[d] * static_cast<double>(element_f32(k_.data(), in_.dtype, off + d));
        dp += static_cast<double>(g[d]) * element_f32(v_.data(), in_.dtype, off + d);
      }
      const double ds = scale * std::exp(dot * scale - lse) * (dp - delta);
      for (std::int64_t d = 0; d < D; ++d)
        dq[d] += ds * static_cast<double>(element_f32(k_.data(), in_.dtype, off + d));
    }
  }

  // dk and dv of key rows `keys` of plane (b, hk), given the run's o and lse:
  // every query row of the group's heads adds its terms (see verify.hpp).
  void check_key_plane(std::int64_t b, std::int64_t hk, const std::vector<std::int64_t>& keys,
                       WorstError& wk, WorstError& wv) {
    const std::int64_t D = s_.head_dim, N = s_.tokens_q, group = s_.heads_q / s_.heads_kv;
    const std::size_t nk = keys.size(), Du = static_cast<std::size_t>(D), nkd = nk * Du;
    const double scale = run_.scale;
    read_kv_plane(b, hk);
    std::vector<double> kj(nkd), vj(nkd);  // (nk, D) the key rows
    std::vector<std::int64_t> kpos(nk);
    for (std::size_t t = 0; t < nk; ++t) {
      kpos[t] = k_coord_[static_cast<std::size_t>(keys[t])];
      for (std::size_t d = 0; d < Du; ++d) {
        const auto off = static_cast<std::size_t>(keys[t]) * Du + d;
        kj[t * Du + d] = element_f32(k_.data(), in_.dtype, off);
        vj[t * Du + d] = element_f32(v_.data(), in_.dtype, off);
      }
    }
    const int threads = omp_get_max_threads();
    // (threads, 2, nk, D): each thread's dk then dv sums.
    std::vector<double> acc(static_cast<std::size_t>(threads) * 2 * nkd, 0.0);
    double qmax = 0, domax = 0;
    for (std::int64_t h = hk * group; h < (hk + 1) * group; ++h)
      for (std::int64_t i0 = 0; i0 < N; i0 += static_cast<std::int64_t>(kBlockRows)) {
        const std::int64_t n = std::min(static_cast<std::int64_t>(kBlockRows), N - i0);
        const std::size_t nd = static_cast<std::size_t>(n) * Du;
        std::vector<std::int64_t> rows(static_cast<std::size_t>(n));
        for (std::int64_t r = 0; r < n; ++r) rows[static_cast<std::size_t>(r)] = i0 + r;
        q_.resize(nd * es_);
        lse_.resize(static_cast<std::size_t>(n));
        input_.read_rows(run_.names.q, b, h, rows, in_.dtype, q_.data());
        read_f32(input_, run_.do_name, b, h, rows, do_dtype_, nd, d_o_);
        read_f32(output_, "o", b, h, rows, run_.o_dtype, nd, o_);
        output_.read_rows("lse", b, h, rows, DType::f32, lse_.data());
        qmax = std::max(qmax, max_abs(q_.data(), in_.dtype, nd));
        domax = std::max(domax, max_abs(d_o_.data(), DType::f32, nd));
        const std::vector<std::int64_t> qpos =
            coordinates(docs_.q_coordinates(Positions::contiguous(i0, n)));
#pragma omp parallel
        {
          double* dk = acc.data() + static_cast<std::size_t>(omp_get_thread_num()) * 2 * nkd;
          double* dv = dk + nkd;
          std::vector<double> q(Du);
#pragma omp for schedule(dynamic, 16)
          for (std::int64_t r = 0; r < n; ++r) {
            const double lse = lse_[static_cast<std::size_t>(r)];
            if (lse == -std::numeric_limits<double>::infinity()) continue;  // saw no key
            const auto row = static_cast<std::size_t>(r) * Du;
            const float* g = d_o_.data() + row;
            double delta = 0;
            for (std::size_t d = 0; d < Du; ++d) {
              q[d] = element_f32(q_.data(), in_.dtype, row + d);
              delta += static_cast<double>(g[d]) * o_[row + d];
            }
            for (std::size_t t = 0; t < nk; ++t) {
              if (!vis_.sees(qpos[static_cast<std::size_t>(r)], kpos[t])) continue;
              double dot = 0, dp = 0;
              for (std::size_t d = 0; d < Du; ++d) {
                dot += q[d] * kj[t * Du + d];
                dp += static_cast<double>(g[d]) * vj[t * Du + d];
              }
              const double p = std::exp(dot * scale - lse), ds = scale * p * (dp - delta);
              for (std::size_t d = 0; d < Du; ++d) {
                dk[t * Du + d] += ds * q[d];
                dv[t * Du + d] += p * static_cast<double>(g[d]);
              }
            }
          }
        }
      }
    const double floor = gradient_error_floor(scale, domax, vmax_, qmax, kmax_);
    compare_key_plane(b, hk, keys, acc, threads, floor, wk, wv);
  }

  // The threads' dk, dv sums (acc: (threads, 2, nk, D)) summed, against what
  // the output holds for those key rows.
  void compare_key_plane(std::int64_t b, std::int64_t hk, const std::vector<std::int64_t>& keys,
                         const std::vector<double>& acc, int threads, double floor, WorstError& wk,
                         WorstError& wv) {
    const std::int64_t D = s_.head_dim;
    const std::size_t nkd = keys.size() * static_cast<std::size_t>(D);
    std::vector<double> ref(2 * nkd, 0.0);  // (2, nk, D) dk, dv
    for (int t = 0; t < threads; ++t)
      for (std::size_t e = 0; e < 2 * nkd; ++e)
        ref[e] += acc[static_cast<std::size_t>(t) * 2 * nkd + e];
    std::vector<float> got(nkd);
    const char* names[] = {"dk", "dv"};
    WorstError* worst[] = {&wk, &wv};
    for (int t = 0; t < 2; ++t) {
      output_.read_rows(names[t], b, hk, keys, DType::f32, got.data());
      add(*worst[t],
          compare_to_reference(got.data(), ref.data() + static_cast<std::size_t>(t) * nkd,
                               static_cast<std::int64_t>(nkd)),
          keys.data(), b, hk, D);
      worst[t]->floor = std::max(worst[t]->floor, floor);
    }
  }

  const RunFacts& run_;
  const InputInfo& in_;
  const Documents& docs_;
  const Window window_;
  const Visibility vis_;
  const Positions k_pos_;
  std::vector<std::int64_t> k_coord_;  // (NK) k_pos_ as a vector (backward runs)
  const AttnShape s_;
  const std::size_t es_;
  const DType do_dtype_;
  H5RowReader input_, output_;
  std::vector<char> k_, v_;      // (NK, D) each, the input's type
  double kmax_ = 0, vmax_ = 0;   // max |k|, |v| of the plane (backward runs)
  std::vector<char> q_, raw_;    // (rows, D), as stored
  std::vector<float> o_, lse_;   // (rows, D), (rows)
  std::vector<float> d_o_, dq_;  // (rows, D) the input's dO, the output's dq
  std::vector<double> ref_o_, ref_lse_, ref_dq_;
};

// The tolerance: given, or by the run's types; lse is f32 whatever o's
// type, so only the compute type loosens it.
void judge(const VerifyRequest& req, VerifyReport& r) {
  r.tolerance = kTolF32;
  r.why = "default for o f32 and compute f32: fp32 accumulation against float64";
  if (req.tolerance) {
    r.tolerance = *req.tolerance;
    r.why = "given with --tolerance";
  } else if (r.compute == "bf16") {
    r.tolerance = kTolBf16;
    r.why =
        "default for compute bf16: q, k, probabilities and v rounded to bf16 before the "
        "products";
  } else if (r.o_dtype == DType::f16) {
    r.tolerance = kTolF16;
    r.why = "default for an f16 o: half-precision rounding of o, 2^-11 relative";
  }
  r.lse_tolerance = req.tolerance || r.compute == "bf16" ? r.tolerance : kTolF32;
  r.o_ok = r.o.rel() <= r.tolerance;
  // lse grows like log N: its error is judged against max(1, max |lse|).
  r.lse_limit = r.lse_tolerance * std::max(1.0, r.lse.scale);
  r.lse_ok = !r.has_lse || r.lse.max_abs <= r.lse_limit;
  if (!r.gradients) return;
  r.grad_tolerance = kTolGrad;
  r.grad_why = "default for fp32 gradients against float64";
  if (req.tolerance) {
    r.grad_tolerance = *req.tolerance;
    r.grad_why = "given with --tolerance";
  } else if (r.o_dtype == DType::f16) {
    r.grad_tolerance = kTolF16;
    r.grad_why = "default for an f16 o: dk's reference reads the run's o, rounded to f16";
  }
  r.dq_ok = r.dq.rel() <= r.grad_tolerance;
  r.dk_ok = r.dk.rel() <= r.grad_tolerance;
  r.dv_ok = r.dv.rel() <= r.grad_tolerance;
}

}  // namespace

double WorstError::rel() const {
  return max_abs / std::max({scale, floor, 1e-30});
}

struct Verifier::Plan {
  Timer wall;  // from the first look at the files
  RunFacts run;
  InputInfo in;
  Documents docs;                  // the input's packed sequences (one when dense)
  std::vector<std::int64_t> flat;  // the checked rows, (b·H + h)·N + i, ascending
  std::vector<std::int64_t> keys;  // backward runs: checked key rows, (b·H_kv + hk)·N_k + j
};

Verifier::Verifier(const VerifyRequest& req) : req_(req), plan_(std::make_unique<Plan>()) {
  // Both files are described in a child process first (io/h5_describe.hpp),
  // as `run` describes its input: a damaged one is one line, exit 3.
  const H5FileDesc od =
      describe_h5_file(req.output, H5DescribeWhat{}, "output file '" + req.output + "'");
  plan_->run = read_facts(od);
  plan_->in = inspect_input(MPI_COMM_SELF, req.input, plan_->run.names);
  plan_->docs = read_input_documents(plan_->in);
  RA_CHECK(plan_->run.documents == 0 || plan_->run.documents == plan_->docs.count(), input,
           "output file '", req.output, "': was computed over ",
           counted(plan_->run.documents, "packed sequence"), ", but input file '", req.input,
           "' holds ", plan_->docs.count(), "; verify against the input that run read");
  VerifyReport& r = report_;
  r.shape = plan_->in.shape;
  check_shapes(od, plan_->run, r.shape);
  r.causal = plan_->run.causal;
  r.window = plan_->run.window;
  r.documents = plan_->docs.count();
  r.scale = plan_->run.scale;
  r.compute = plan_->run.compute;
  r.o_dtype = plan_->run.o_dtype;
  r.has_lse = plan_->run.has_lse;
  r.input_changed = input_changed(od, plan_->in);
  r.rows_total = r.shape.batch * r.shape.heads_q * r.shape.tokens_q;
  r.all_rows = req.rows == 0 || r.rows_total <= kAllRowsUpTo || req.rows >= r.rows_total;
  plan_->flat = choose_rows(r.rows_total, r.all_rows ? 0 : req.rows, req.seed);
  r.rows_checked = static_cast<std::int64_t>(plan_->flat.size());
  r.gradients = plan_->run.gradients;
  if (!r.gradients) return;
  r.do_name = plan_->run.do_name;
  r.do_dtype = plan_->in.dtype_of(InputTensor::d_o);
  r.key_rows_total = r.shape.batch * r.shape.heads_kv * r.shape.tokens_kv;
  r.all_key_rows =
      req.rows == 0 || r.key_rows_total <= kAllRowsUpTo || req.rows >= r.key_rows_total;
  plan_->keys = choose_rows(r.key_rows_total, r.all_key_rows ? 0 : req.rows, req.seed);
  r.key_rows_checked = static_cast<std::int64_t>(plan_->keys.size());
}

Verifier::~Verifier() = default;

const VerifyReport& Verifier::check() {
  RowChecker rc(req_, plan_->run, plan_->in, plan_->docs, report_.do_dtype);
  rc.check(plan_->flat, report_.o, report_.lse, report_.dq);
  if (report_.gradients) rc.check_keys(plan_->keys, report_.dk, report_.dv);
  judge(req_, report_);
  report_.seconds = plan_->wall.seconds();
  report_.threads = omp_get_max_threads();
  return report_;
}

}  // namespace ringattn
