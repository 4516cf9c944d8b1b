// The CPU backward kernel (see backward.hpp). One work item is one key tile
// of one (batch, kv head): it owns that tile's dK and dV, so no two threads
// write the same rows of them, and walks every query tile of the heads of
// its group. dQ, which every key tile adds to, goes to per-thread sums that
// finish() adds up.
//
// All five products are row-major GEMMs on transposed score tiles (keys as
// rows, queries as columns), so no operand is transposed inside the loop:
//
//   Sᵀ  = K · (scale·log2e·Q)ᵀ     (BK, BQ)   dPᵀ = V · dOᵀ    (BK, BQ)
//   dV += Pᵀ · dO                  (BK, D)    dK += dSᵀ · Q    (BK, D)
//   dQᵀ += Kᵀ · dSᵀ                (D, BQ)
//
// dQ's sums depend on which items each thread did, so the bits of dq depend
// on the thread count (the same count gives the same bits).
//
// Sums over many tiles are compensated as in the forward (kFoldTiles): dK
// and dV are summed plainly over at most kFoldRows query rows and then
// Kahan-added, dQ is Kahan-added at every tile.
#include "kernel/backward.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <tuple>
#include <vector>

#include "core/checked.hpp"
#include "core/error.hpp"
#include "kernel/attention.hpp"
#include "kernel/softmax_tile.hpp"
#include "kernel/tile_classify.hpp"
#include "kernel/tile_gemm.hpp"

namespace ringattn {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
// Measured on Zen 3 (AVX2), N = 8192, D = 128, H = 4, 2 threads, fraction of
// the FMA peak non-causal / causal: 64 x 64 0.64 / 0.42-0.56, 64 x 128
// 0.66-0.70 / 0.64-0.66, 128 x 128 0.65 / 0.56, 64 x 256 0.65 / 0.66. A
// wider key tile spreads dQ's per-tile compensated add over more keys.
constexpr int kBlockQ = 64, kBlockK = 128;
constexpr int kFoldRows = 256;  // query rows summed plainly into dK, dV before a Kahan add

std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return (a + b - 1) / b;
}

// Query tile rows: short blocks get evenly split tiles (multiples of 16).
int block_q(std::int64_t n_q) {
  if (n_q <= 0) return 16;
  const std::int64_t tiles = ceil_div(n_q, kBlockQ);
  return static_cast<int>(std::min<std::int64_t>(kBlockQ, ceil_div(ceil_div(n_q, tiles), 16) * 16));
}

// Row-major C(M x N, ldc) (+)= A(M x K, lda) · B(K x N, ldb) through the
// column-major TileGemm: the same product with the operands' roles swapped.
class RowGemm {
 public:
  RowGemm(int M, int N, int K, int lda, int ldb, int ldc, bool accumulate)
      : g_(N, M, K, ldb, lda, ldc, accumulate) {}
  void operator()(const float* a, const float* b, float* c) const { g_(b, a, c); }

 private:
  TileGemm g_;
};

void check_backward(const AttnParams& p) {
  p.validate();
  RA_CHECK(p.compute == ComputeType::f32, usage,
           "the backward computes in f32 only (compute = ", compute_type_name(p.compute), ")");
}

std::vector<std::int64_t> positions_of(const Positions& pos, std::int64_t n, std::int64_t padded) {
  std::vector<std::int64_t> out(static_cast<std::size_t>(std::max<std::int64_t>(padded, n)));
  if (n == 0) return out;
  if (pos.empty())
    std::iota(out.begin(), out.begin() + n, std::int64_t{0});
  else
    pos.fill(0, n, out.data());
  std::fill(out.begin() + n, out.end(), out[static_cast<std::size_t>(n - 1)]);
  return out;
}

}  // namespace

void GradState::reset(const AttnParams& p, const GradInputs& in) {
  check_backward(p);
  batch_ = p.batch;
  heads_ = p.heads_q;
  rows_ = p.n_q;
  dim_ = p.head_dim;
  bq_ = block_q(p.n_q);
  threads_ = p.threads;
  qtiles_ = ceil_div(p.n_q, bq_);
  const std::int64_t B = batch_, H = heads_, QT = qtiles_, BQ = bq_, D = dim_;
  const std::size_t per_q = static_cast<std::size_t>(B * H * QT * BQ * D);
  const std::size_t per_row = static_cast<std::size_t>(B * H * QT * BQ);
  q_t_.resize(per_q);
  q_.resize(per_q);
  do_t_.resize(per_q);
  do_.resize(per_q);
  lse2_.resize(per_row);
  delta_.resize(per_row);
  dq_sum_.resize(per_q * static_cast<std::size_t>(threads_));
  dq_comp_.resize(per_q * static_cast<std::size_t>(threads_));
  dq_sum_.fill(0.0f);
  dq_comp_.fill(0.0f);
  if (p.n_q == 0) return;

  const std::vector<std::int64_t> pos = positions_of(p.q_pos, p.n_q, QT * BQ);
  qpos_.resize(static_cast<std::size_t>(QT * BQ));
  std::copy(pos.begin(), pos.end(), qpos_.data());
  qmin_.resize(static_cast<std::size_t>(QT));
  qmax_.resize(static_cast<std::size_t>(QT));
  for (std::int64_t qt = 0; qt < QT; ++qt) {
    const std::int64_t n = std::min<std::int64_t>(BQ, p.n_q - qt * BQ);
    auto [lo, hi] = std::minmax_element(pos.begin() + qt * BQ, pos.begin() + qt * BQ + n);
    qmin_[qt] = *lo;
    qmax_[qt] = *hi;
  }

  const float qscale = p.effective_scale() * kLog2e;
  const std::size_t es = dtype_size(p.dtype);
#pragma omp parallel num_threads(threads_)
  {
    std::vector<float> row(static_cast<std::size_t>(D));
#pragma omp for collapse(2) schedule(static)
    for (std::int64_t bh = 0; bh < B * H; ++bh)
      for (std::int64_t qt = 0; qt < QT; ++qt) {
        const std::int64_t b = bh / H, h = bh % H;
        const std::int64_t tile = bh * QT + qt;
        float* qt_tile = q_t_.data() + tile * D * BQ;
        float* q_tile = q_.data() + tile * BQ * D;
        float* dot_tile = do_t_.data() + tile * D * BQ;
        float* do_tile = do_.data() + tile * BQ * D;
        for (std::int64_t i = 0; i < BQ; ++i) {
          const std::int64_t r = qt * BQ + i;
          float* qr = q_tile + i * D;
          float* dr = do_tile + i * D;
          float& lse2 = lse2_[static_cast<std::size_t>(tile * BQ + i)];
          float& delta = delta_[static_cast<std::size_t>(tile * BQ + i)];
          if (r < p.n_q) {
            const std::int64_t off =
                b * p.q.batch_stride + h * p.q.head_stride + r * p.q.row_stride;
            load_f32(static_cast<const char*>(p.q.data) + off * static_cast<std::int64_t>(es),
                     p.dtype, qr, static_cast<std::size_t>(D));
            const std::int64_t dense = (bh * p.n_q + r) * D;
            std::copy_n(in.d_o + dense, D, dr);
            double dsum = 0;
            for (std::int64_t d = 0; d < D; ++d)
              dsum += static_cast<double>(dr[d]) * static_cast<double>(in.o[dense + d]);
            delta = static_cast<float>(dsum);
            const float l = in.lse[bh * p.n_q + r];
            lse2 = std::isfinite(l) ? l * kLog2e : std::numeric_limits<float>::infinity();
          } else {
            std::fill_n(qr, D, 0.0f);
            std::fill_n(dr, D, 0.0f);
            delta = 0.0f;
            lse2 = std::numeric_limits<float>::infinity();
          }
          for (std::int64_t d = 0; d < D; ++d) {
            qt_tile[d * BQ + i] = qr[d] * qscale;
            dot_tile[d * BQ + i] = dr[d];
          }
        }
      }
  }
}

void GradState::fold(const AttnParams& p, float* dk, float* dv) {
  check_backward(p);
  RA_CHECK(p.batch == batch_ && p.heads_q == heads_ && p.n_q == rows_ && p.head_dim == dim_ &&
               p.threads == threads_,
           internal, "a backward fold for other queries than its state's");
  if (p.n_q == 0 || p.n_kv == 0) return;
  const int BQ = bq_, BK = kBlockK, D = static_cast<int>(dim_);
  const std::int64_t B = batch_, HQ = heads_, HK = p.heads_kv, group = HQ / HK, QT = qtiles_;
  const std::int64_t KT = ceil_div(p.n_kv, BK);
  const Visibility vis = p.visibility();
  // The transposed tiles' mask: rows are keys, columns queries.
  const Visibility vis_t{vis.right, vis.left};
  const VectorIsa isa = resolve_isa(p.cpu.isa);
  const float scale = p.effective_scale();
  const std::size_t es = dtype_size(p.dtype);
  const std::size_t per_q = static_cast<std::size_t>(B * HQ * QT * BQ * D);

  const std::vector<std::int64_t> kpos = positions_of(p.k_pos, p.n_kv, KT * BK);
  std::vector<std::int64_t> kmin(static_cast<std::size_t>(KT)), kmax(static_cast<std::size_t>(KT));
  std::vector<std::int64_t> cost(static_cast<std::size_t>(KT), 0);
  for (std::int64_t kt = 0; kt < KT; ++kt) {
    const std::int64_t n = std::min<std::int64_t>(BK, p.n_kv - kt * BK);
    auto [lo, hi] = std::minmax_element(kpos.begin() + kt * BK, kpos.begin() + kt * BK + n);
    kmin[kt] = *lo;
    kmax[kt] = *hi;
    for (std::int64_t qt = 0; qt < QT; ++qt)
      cost[kt] += classify_tile(qmin_[qt], qmax_[qt], kmin[kt], kmax[kt], vis) != TileKind::empty;
  }
  // Key tiles by descending work, then (b, kv head): longest first.
  std::vector<std::int64_t> order(static_cast<std::size_t>(KT));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::int64_t a, std::int64_t b) { return cost[a] > cost[b]; });

  const RowGemm scores(BK, BQ, D, D, BQ, BQ, false);      // Sᵀ, dPᵀ
  const RowGemm to_kv_first(BK, D, BQ, BQ, D, D, false);  // dV, dK partials
  const RowGemm to_kv_more(BK, D, BQ, BQ, D, D, true);
  const RowGemm to_q(D, BQ, BK, BK, BQ, BQ, false);  // dQᵀ of one tile
  const int fold_tiles = std::max(1, kFoldRows / BQ);
  const std::int64_t items = KT * B * HK;

#pragma omp parallel num_threads(threads_)
  {
    const int t = omp_get_thread_num();
    float* dq_sum = dq_sum_.data() + per_q * static_cast<std::size_t>(t);
    float* dq_comp = dq_comp_.data() + per_q * static_cast<std::size_t>(t);
    const std::size_t kd = static_cast<std::size_t>(BK) * D, qk = static_cast<std::size_t>(BK) * BQ;
    AlignedBuffer<float> k_tile(kd), kt_tile(kd), v_tile(kd);  // K, Kᵀ (D, BK), V
    AlignedBuffer<float> s(qk), dp(qk);                        // (BK, BQ)
    AlignedBuffer<float> dq_tile(static_cast<std::size_t>(D) * BQ);
    AlignedBuffer<float> dk_part(kd), dk_sum(kd), dk_comp(kd);
    AlignedBuffer<float> dv_part(kd), dv_sum(kd), dv_comp(kd);
    const bool poll = p.progress != nullptr && t == 0;

    // Static: which thread's dQ sum an item adds to, and in what order, is
    // then fixed for a thread count, so a run's bits are too (a resumed job's
    // chunks match an uninterrupted run's). The costliest items come first,
    // dealt round-robin, which keeps causal work balanced.
#pragma omp for schedule(static, 1)
    for (std::int64_t item = 0; item < items; ++item) {
      const std::int64_t kt = order[static_cast<std::size_t>(item / (B * HK))];
      const std::int64_t b = (item % (B * HK)) / HK, hk = item % HK;
      const int k_valid = static_cast<int>(std::min<std::int64_t>(BK, p.n_kv - kt * BK));
      for (int j = 0; j < BK; ++j) {
        float* kr = k_tile.data() + static_cast<std::int64_t>(j) * D;
        float* vr = v_tile.data() + static_cast<std::int64_t>(j) * D;
        if (j < k_valid) {
          const std::int64_t r = kt * BK + j;
          const std::int64_t koff =
              b * p.k.batch_stride + hk * p.k.head_stride + r * p.k.row_stride;
          const std::int64_t voff =
              b * p.v.batch_stride + hk * p.v.head_stride + r * p.v.row_stride;
          load_f32(static_cast<const char*>(p.k.data) + koff * static_cast<std::int64_t>(es),
                   p.dtype, kr, static_cast<std::size_t>(D));
          load_f32(static_cast<const char*>(p.v.data) + voff * static_cast<std::int64_t>(es),
                   p.dtype, vr, static_cast<std::size_t>(D));
        } else {
          std::fill_n(kr, D, 0.0f);
          std::fill_n(vr, D, 0.0f);
        }
        for (int d = 0; d < D; ++d) kt_tile[static_cast<std::size_t>(d) * BK + j] = kr[d];
      }
      dk_sum.fill(0.0f);
      dk_comp.fill(0.0f);
      dv_sum.fill(0.0f);
      dv_comp.fill(0.0f);
      int pending = 0;

      for (std::int64_t h = hk * group; h < (hk + 1) * group; ++h)
        for (std::int64_t qt = 0; qt < QT; ++qt) {
          const TileKind kind = classify_tile(qmin_[qt], qmax_[qt], kmin[kt], kmax[kt], vis);
          if (kind == TileKind::empty) continue;
          const std::int64_t tile = (b * HQ + h) * QT + qt;
          const std::int64_t qd = tile * BQ * D;
          scores(k_tile.data(), q_t_.data() + qd, s.data());
          if (kind == TileKind::diagonal)
            mask_tile(s.data(), BK, BQ, kpos.data() + kt * BK, qpos_.data() + qt * BQ, BQ, vis_t);
          scores(v_tile.data(), do_t_.data() + qd, dp.data());
          gradient_tile({.s = s.data(),
                         .dp = dp.data(),
                         .rows = BK,
                         .cols = BQ,
                         .lse2 = lse2_.data() + tile * BQ,
                         .delta = delta_.data() + tile * BQ,
                         .scale = scale},
                        isa);
          const RowGemm& to_kv = pending > 0 ? to_kv_more : to_kv_first;
          to_kv(s.data(), do_.data() + qd, dv_part.data());
          to_kv(dp.data(), q_.data() + qd, dk_part.data());
          to_q(kt_tile.data(), dp.data(), dq_tile.data());
          compensated_add(dq_sum + qd, dq_comp + qd, dq_tile.data(),
                          static_cast<std::int64_t>(D) * BQ, isa);
          if (++pending == fold_tiles) {
            compensated_add(dk_sum.data(), dk_comp.data(), dk_part.data(),
                            static_cast<std::int64_t>(kd), isa);
            compensated_add(dv_sum.data(), dv_comp.data(), dv_part.data(),
                            static_cast<std::int64_t>(kd), isa);
            pending = 0;
          }
          if (poll)  // items are dealt round-robin: thread 0's is about where the team is
            p.progress(p.progress_arg, static_cast<double>(item) / static_cast<double>(items));
        }
      if (pending > 0) {
        compensated_add(dk_sum.data(), dk_comp.data(), dk_part.data(),
                        static_cast<std::int64_t>(kd), isa);
        compensated_add(dv_sum.data(), dv_comp.data(), dv_part.data(),
                        static_cast<std::int64_t>(kd), isa);
      }
      const std::int64_t out = ((b * HK + hk) * p.n_kv + kt * BK) * D;
      for (std::int64_t e = 0; e < static_cast<std::int64_t>(k_valid) * D; ++e) {
        dk[out + e] += dk_sum[e] - dk_comp[e];
        dv[out + e] += dv_sum[e] - dv_comp[e];
      }
    }
  }
}

void GradState::finish(float* dq) const {
  const std::int64_t BQ = bq_, D = dim_, QT = qtiles_;
  const std::size_t per_q = static_cast<std::size_t>(batch_ * heads_ * QT * BQ * D);
#pragma omp parallel for num_threads(threads_) schedule(static)
  for (std::int64_t bh = 0; bh < batch_ * heads_; ++bh)
    for (std::int64_t r = 0; r < rows_; ++r) {
      const std::int64_t qt = r / BQ, i = r % BQ;
      const std::size_t base = static_cast<std::size_t>((bh * QT + qt) * D * BQ + i);
      float* out = dq + (bh * rows_ + r) * D;
      for (std::int64_t d = 0; d < D; ++d) {
        double sum = 0;
        for (int t = 0; t < threads_; ++t) {
          const std::size_t e =
              per_q * static_cast<std::size_t>(t) + base + static_cast<std::size_t>(d * BQ);
          sum += static_cast<double>(dq_sum_[e]) - static_cast<double>(dq_comp_[e]);
        }
        out[d] = static_cast<float>(sum);
      }
    }
}

std::size_t GradState::bytes(const AttnParams& p) {
  if (p.n_q == 0) return 0;
  const std::int64_t BQ = block_q(p.n_q), QT = ceil_div(p.n_q, BQ);
  Checked c;
  const std::int64_t per_q = c.mul({p.batch, p.heads_q, QT, BQ, p.head_dim});
  const std::int64_t per_row = c.mul({p.batch, p.heads_q, QT, BQ});
  const std::int64_t floats =
      c.add({c.mul({4 + 2 * std::max(p.threads, 1), per_q}), c.mul({2, per_row})});
  const std::int64_t total = c.add({c.mul({floats, 4}), c.mul({QT * BQ + 2 * QT, 8})});
  return c.overflow ? static_cast<std::size_t>(kBytesOverflow) : static_cast<std::size_t>(total);
}

std::size_t GradState::fold_bytes(const AttnParams& p) {
  const std::int64_t BQ = block_q(p.n_q), BK = kBlockK, D = p.head_dim;
  const std::int64_t KT = ceil_div(p.n_kv, BK);
  // Positions and tile ranges, then per thread: K, Kᵀ, V, 6 dK/dV tiles, Sᵀ, dPᵀ, dQᵀ.
  const std::int64_t shared = (KT * BK + 4 * KT) * 8;
  const std::int64_t per_thread = (9 * BK * D + 2 * BK * BQ + D * BQ) * 4;
  return static_cast<std::size_t>(shared + std::max(p.threads, 1) * per_thread);
}

void attention_backward(const AttnParams& p, const GradInputs& in, float* dq, float* dk,
                        float* dv) {
  const std::size_t kv = static_cast<std::size_t>(p.batch * p.heads_kv * p.n_kv * p.head_dim);
  std::fill_n(dk, kv, 0.0f);
  std::fill_n(dv, kv, 0.0f);
  GradState g;
  g.reset(p, in);
  g.fold(p, dk, dv);
  g.finish(dq);
}

double attention_backward_flops(const AttnParams& p) {
  return 2.5 * attention_flops(p);
}

}  // namespace ringattn
