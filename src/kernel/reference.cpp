// The float64 reference (two passes per row: max, then weighted sum).
#include "kernel/reference.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.hpp"

namespace ringattn {

namespace {

// Query row (b, h, i) widened into q, and its scaled scores against every key
// into s (-inf where the row does not see the key). Returns their max: -inf
// when the row sees no key.
double score_row(const AttnParams& p, const Visibility& vis, double scale, std::int64_t b,
                 std::int64_t h, std::int64_t i, std::vector<double>& q, std::vector<double>& s) {
  const std::int64_t D = p.head_dim, hk = h / (p.heads_q / p.heads_kv);
  const std::int64_t qpos = p.q_pos.empty() ? i : p.q_pos[i];
  const std::int64_t qoff = b * p.q.batch_stride + h * p.q.head_stride + i * p.q.row_stride;
  for (std::int64_t d = 0; d < D; ++d) q[d] = element_f32(p.q.data, p.dtype, qoff + d);
  double mx = -std::numeric_limits<double>::infinity();
  for (std::int64_t j = 0; j < p.n_kv; ++j) {
    const std::int64_t kpos = p.k_pos.empty() ? j : p.k_pos[j];
    if (!vis.sees(qpos, kpos)) {
      s[j] = -std::numeric_limits<double>::infinity();
      continue;
    }
    const std::int64_t koff = b * p.k.batch_stride + hk * p.k.head_stride + j * p.k.row_stride;
    double dot = 0;
    for (std::int64_t d = 0; d < D; ++d)
      dot += q[d] * static_cast<double>(element_f32(p.k.data, p.dtype, koff + d));
    s[j] = dot * scale;
    if (s[j] > mx) mx = s[j];
  }
  return mx;
}

}  // namespace

void reference_attention(const AttnParams& p, double* o, double* lse) {
  p.validate();
  const std::int64_t D = p.head_dim, group = p.heads_q / p.heads_kv;
  const double scale = p.effective_scale();
  const Visibility vis = p.visibility();
  std::vector<double> s(static_cast<std::size_t>(p.n_kv)), q(static_cast<std::size_t>(D));
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.heads_q; ++h) {
      const std::int64_t hk = h / group;
      for (std::int64_t i = 0; i < p.n_q; ++i) {
        const double mx = score_row(p, vis, scale, b, h, i, q, s);
        double* orow = o + ((b * p.heads_q + h) * p.n_q + i) * D;
        for (std::int64_t d = 0; d < D; ++d) orow[d] = 0;
        double l = 0;
        if (mx != -std::numeric_limits<double>::infinity()) {
          for (std::int64_t j = 0; j < p.n_kv; ++j) {
            if (s[j] == -std::numeric_limits<double>::infinity()) continue;
            const double w = std::exp(s[j] - mx);
            l += w;
            const std::int64_t voff =
                b * p.v.batch_stride + hk * p.v.head_stride + j * p.v.row_stride;
            for (std::int64_t d = 0; d < D; ++d)
              orow[d] += w * static_cast<double>(element_f32(p.v.data, p.dtype, voff + d));
          }
          for (std::int64_t d = 0; d < D; ++d) orow[d] /= l;
        }
        if (lse)
          lse[(b * p.heads_q + h) * p.n_q + i] =
              l > 0 ? mx + std::log(l) : -std::numeric_limits<double>::infinity();
      }
    }
}

void reference_attention_backward(const AttnParams& p, const float* d_o, double* dq, double* dk,
                                  double* dv) {
  p.validate();
  const std::int64_t D = p.head_dim, group = p.heads_q / p.heads_kv;
  const double scale = p.effective_scale();
  const Visibility vis = p.visibility();
  const double ninf = -std::numeric_limits<double>::infinity();
  std::fill_n(dk, p.batch * p.heads_kv * p.n_kv * D, 0.0);
  std::fill_n(dv, p.batch * p.heads_kv * p.n_kv * D, 0.0);
  std::vector<double> s(static_cast<std::size_t>(p.n_kv)), dp(static_cast<std::size_t>(p.n_kv));
  std::vector<double> q(static_cast<std::size_t>(D)), o(static_cast<std::size_t>(D));
  auto kv_at = [&](const TensorRef& t, std::int64_t b, std::int64_t hk, std::int64_t j,
                   std::int64_t d) {
    return static_cast<double>(element_f32(
        t.data, p.dtype, b * t.batch_stride + hk * t.head_stride + j * t.row_stride + d));
  };
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.heads_q; ++h) {
      const std::int64_t hk = h / group;
      for (std::int64_t i = 0; i < p.n_q; ++i) {
        const float* g = d_o + ((b * p.heads_q + h) * p.n_q + i) * D;
        double* dqr = dq + ((b * p.heads_q + h) * p.n_q + i) * D;
        std::fill_n(dqr, D, 0.0);
        const double mx = score_row(p, vis, scale, b, h, i, q, s);
        if (mx == ninf) continue;  // saw no key: no gradient
        double l = 0;
        for (std::int64_t j = 0; j < p.n_kv; ++j)
          if (s[j] != ninf) l += std::exp(s[j] - mx);
        // P_ij, o_i, dP_ij = dO_i · v_j and D_i = sum_j P_ij dP_ij.
        std::fill(o.begin(), o.end(), 0.0);
        double delta = 0;
        for (std::int64_t j = 0; j < p.n_kv; ++j) {
          if (s[j] == ninf) continue;
          s[j] = std::exp(s[j] - mx) / l;
          double dpj = 0;
          for (std::int64_t d = 0; d < D; ++d)
            dpj += static_cast<double>(g[d]) * kv_at(p.v, b, hk, j, d);
          dp[j] = dpj;
          delta += s[j] * dpj;
        }
        for (std::int64_t j = 0; j < p.n_kv; ++j) {
          if (s[j] == ninf) continue;
          const double ds = scale * s[j] * (dp[j] - delta);
          double* dkr = dk + ((b * p.heads_kv + hk) * p.n_kv + j) * D;
          double* dvr = dv + ((b * p.heads_kv + hk) * p.n_kv + j) * D;
          for (std::int64_t d = 0; d < D; ++d) {
            dqr[d] += ds * kv_at(p.k, b, hk, j, d);
            dkr[d] += ds * q[d];
            dvr[d] += s[j] * static_cast<double>(g[d]);
          }
        }
      }
    }
}

}  // namespace ringattn

namespace ringattn {

Comparison compare_to_reference(const float* x, const double* ref, std::int64_t n) {
  Comparison c;
  for (std::int64_t i = 0; i < n; ++i)
    if (std::isfinite(ref[i])) c.scale = std::max(c.scale, std::fabs(ref[i]));
  c.scale = std::max(c.scale, 1e-30);
  for (std::int64_t i = 0; i < n; ++i) {
    const double xi = x[i], ri = ref[i];
    double err;
    if (std::isinf(ri) && xi == ri)
      err = 0;
    else if (!std::isfinite(xi) || !std::isfinite(ri))
      err = std::numeric_limits<double>::infinity();
    else
      err = std::fabs(xi - ri);
    if (err > c.max_abs_err || c.worst < 0) {
      if (err > c.max_abs_err || c.worst < 0) c.worst = i;
      c.max_abs_err = std::max(c.max_abs_err, err);
      c.worst_value = xi;
      c.worst_ref = ri;
    }
  }
  c.rel_err = c.max_abs_err / c.scale;
  return c;
}

double gradient_error_floor(double scale, double max_do, double max_v, double max_q, double max_k) {
  return std::fabs(scale) * max_do * max_v * std::max(max_q, max_k) / 20.0;
}

double gradient_error_floor(const AttnParams& p, const float* d_o, std::int64_t n_do) {
  auto max_abs = [&](const TensorRef& t, std::int64_t heads, std::int64_t rows) {
    double m = 0;
    for (std::int64_t b = 0; b < p.batch; ++b)
      for (std::int64_t h = 0; h < heads; ++h)
        for (std::int64_t i = 0; i < rows; ++i)
          for (std::int64_t d = 0; d < p.head_dim; ++d)
            m = std::max(m, std::fabs(static_cast<double>(element_f32(
                                t.data, p.dtype,
                                static_cast<std::size_t>(b * t.batch_stride + h * t.head_stride +
                                                         i * t.row_stride + d)))));
    return m;
  };
  double g = 0;
  for (std::int64_t i = 0; i < n_do; ++i) g = std::max(g, std::fabs(static_cast<double>(d_o[i])));
  return gradient_error_floor(p.effective_scale(), g, max_abs(p.v, p.heads_kv, p.n_kv),
                              max_abs(p.q, p.heads_q, p.n_q), max_abs(p.k, p.heads_kv, p.n_kv));
}

}  // namespace ringattn
