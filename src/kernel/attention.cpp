// The CPU fused attention kernel (flash-attention forward on tiles):
//
//   for each work item (batch b, query head h, query tile qt), in parallel:
//     for each key tile kt that the causal rule does not empty:
//       S  = Q_qt · K_kt^T            (BQ, BK)   tile product 1, libxsmm
//       mask S where diagonal or past the block's end
//       softmax step: m, l, acc updated, S -> P            (softmax_tile)
//       part (+)= P · V_kt            (BQ, D)    tile product 2, libxsmm
//     every kFoldKeys keys: acc += part, Kahan-compensated
//
// The softmax step prefetches this step's V tile and the next K^T tile into
// L2 while it computes (SoftmaxTile::prefetch).
//
// K is packed transposed and V padded once per call (libxsmm cannot transpose
// its first operand), which also widens f16/bf16 to f32 and zero-pads the last
// tile so both products always run at the fixed tile shape. On the bf16 dot
// path (compute = bf16 on AVX512_BF16) the packs hold bf16 bits in the VNNI
// pair layout instead, Q and P are bf16 too, and the scale moves from Q to
// the scores (softmax_tile), so that only q itself is rounded.
#include "kernel/attention.hpp"
#include "kernel/workspace.hpp"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "core/aligned_buffer.hpp"
#include "core/checked.hpp"
#include "core/error.hpp"
#include "kernel/softmax_tile.hpp"
#include "kernel/tile_classify.hpp"
#include "kernel/tile_gemm.hpp"

namespace ringattn {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr double kLn2 = 0.6931471805599453;

// fp32 rounding of P·V does not cancel when key rows repeat (a genome has
// about five distinct ones): a plain sum drifts in proportion to the keys it
// covers (measured: 3e-6 of max|o| over 256 keys, 2.7e-5 over 2048). So P·V
// is summed plainly over at most kFoldKeys keys, inside the tile products,
// and each such partial sum is added to the running total with Kahan
// compensation; l's lanes are compensated every tile (plain, they drifted to
// 2.2e-4 at 2^22 keys). The error then depends on neither the key count nor
// the tile shape: at most 3.6e-6 measured on 2, 5 and 16 distinct rows up to
// 2^22 keys, for one compensated add of (BQ, D) per 256 keys (on Zen 4 its
// cost was within the benchmark's 1-2% noise).
constexpr int kFoldKeys = 256;

// Tile sizes, one compile-time place per ISA. BQ query rows share each packed
// K/V tile; BK keys make one score-tile row.
template <int BQ, int BK>
struct KernelTraits {
  static constexpr int kBlockQ = BQ;
  static constexpr int kBlockK = BK;
  static constexpr int kFoldTiles = kFoldKeys / BK;  // key tiles per compensated fold
  static_assert(BK % 16 == 0, "softmax_tile works on whole 16-float vectors");
  static_assert(BQ % 8 == 0, "query tile rows should fill the GEMM's register blocking");
  static_assert(kFoldKeys % BK == 0, "a fold covers whole key tiles");
  // The score tile plus one K^T and one V tile at D = 128 stay within 512 KiB:
  // all of Zen 3's L2, half of Zen 5's.
  static_assert((BQ * BK + 2 * BK * 128) * 4 <= 512 * 1024, "tiles exceed the L2 budget");
};
// AVX2, measured on Zen 3 at N = 8192, D = 128 (fraction of FMA peak, 2
// threads): 64x64 0.71, 128x64 0.76, 192x64 0.78, 256x64 0.79; BK = 128
// drops to 0.65 (K^T and V tiles leave L1). Larger BQ reuses each K/V tile
// across more queries.
using TraitsAvx2 = KernelTraits<256, 64>;
// AVX-512 (MACHINE-FACTS: 128 x 256 tiles measured best on Zen 5).
using TraitsAvx512 = KernelTraits<128, 256>;

struct TileConfig {
  int bq, bk, fold_tiles;
};

TileShape native_tile_shape() {
  return resolve_isa(VectorIsa::native) == VectorIsa::avx512 ? TileShape::avx512 : TileShape::avx2;
}

TileConfig tile_config(TileShape t) {
  if (t == TileShape::native) t = native_tile_shape();
  if (t == TileShape::avx512)
    return {TraitsAvx512::kBlockQ, TraitsAvx512::kBlockK, TraitsAvx512::kFoldTiles};
  return {TraitsAvx2::kBlockQ, TraitsAvx2::kBlockK, TraitsAvx2::kFoldTiles};
}

std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return (a + b - 1) / b;
}

// The sizes one update_state call works with, decided once from the block
// and the tile shape; the kernel and its workspace estimate both read them.
struct Geometry {
  int BQ = 0, BK = 0, D = 0;
  int fold_tiles = 0;                     // key tiles per compensated fold of P·V
  std::int64_t QT = 0, KT = 0;            // query and key tiles
  bool dot = false;                       // bf16 dot products: packs, Q and P are bf16 bits
  Bf16Gemm dot_gemm = Bf16Gemm::libxsmm;  // the dot path's tile products: vdpbf16ps or AMX
  int Dk = 0;                             // depth of Q·K^T: D, on the dot path rounded up to even
  bool v_direct = false;                  // V read in place (f32 rows of D floats), except...
  bool v_tail = false;                    // ...a partial last tile, which is zero-padded
  std::int64_t v_tiles = 0;               // packed V tiles per (batch, kv head)
};

Geometry geometry(const AttnParams& p) {
  const TileConfig cfg = tile_config(p.cpu.tiles);
  Geometry g;
  // Short blocks get evenly split query tiles (multiples of 16 rows) instead
  // of one mostly-padded full tile.
  const std::int64_t qtiles = ceil_div(p.n_q, cfg.bq);
  g.BQ =
      static_cast<int>(std::min<std::int64_t>(cfg.bq, ceil_div(ceil_div(p.n_q, qtiles), 16) * 16));
  g.BK = cfg.bk;
  g.fold_tiles = cfg.fold_tiles;
  g.D = static_cast<int>(p.head_dim);
  const Bf16Products products = resolve_bf16_products(p.cpu.bf16);
  g.dot = p.compute == ComputeType::bf16 &&
          (products == Bf16Products::dot || products == Bf16Products::amx);
  g.dot_gemm = products == Bf16Products::amx ? Bf16Gemm::amx : Bf16Gemm::libxsmm;
  g.Dk = g.dot ? (g.D + 1) / 2 * 2 : g.D;
  g.QT = ceil_div(p.n_q, g.BQ);
  g.KT = ceil_div(p.n_kv, g.BK);
  g.v_direct = p.dtype == DType::f32 && p.compute != ComputeType::bf16 && p.v.row_stride == g.D;
  g.v_tail = p.n_kv % g.BK != 0;
  g.v_tiles = g.v_direct ? (g.v_tail ? 1 : 0) : g.KT;
  return g;
}

thread_local std::size_t t_last_workspace_bytes = 0;

void fill_positions(const Positions& pos, std::int64_t n, std::int64_t* out) {
  if (pos.empty())
    std::iota(out, out + n, std::int64_t{0});
  else
    pos.fill(0, n, out);
}

// Smallest and largest of pos[begin, begin + n).
std::pair<std::int64_t, std::int64_t> min_max(const std::int64_t* pos, std::int64_t begin,
                                              std::int64_t n) {
  auto [lo, hi] = std::minmax_element(pos + begin, pos + begin + n);
  return {*lo, *hi};
}

void check_state(const AttnParams& p, const AttnState& s) {
  RA_CHECK(
      s.batch == p.batch && s.heads == p.heads_q && s.rows == p.n_q && s.head_dim == p.head_dim,
      internal, "state shape (", s.batch, ", ", s.heads, ", ", s.rows, ", ", s.head_dim,
      ") does not match the block (", p.batch, ", ", p.heads_q, ", ", p.n_q, ", ", p.head_dim, ")");
}

}  // namespace

void update_state(const AttnParams& p, AttnState& s) {
  p.validate();
  check_state(p, s);
  t_last_workspace_bytes = 0;
  if (p.n_q == 0 || p.n_kv == 0) return;

  const Geometry g = geometry(p);
  const int BQ = g.BQ, BK = g.BK, D = g.D;
  const std::int64_t B = p.batch, HQ = p.heads_q, HK = p.heads_kv, group = HQ / HK;
  const std::int64_t QT = g.QT, KT = g.KT;
  const bool bf16 = p.compute == ComputeType::bf16;
  const float qscale = p.effective_scale() * kLog2e;
  const VectorIsa isa = resolve_isa(p.cpu.isa);
  const Visibility vis = p.visibility();
  Workspace ws;

  AlignedBuffer<std::int64_t> qpos = ws.buffer<std::int64_t>(static_cast<std::size_t>(p.n_q));
  fill_positions(p.q_pos, p.n_q, qpos.data());
  // The tail tile reads BK entries: past the block's end they repeat its last.
  AlignedBuffer<std::int64_t> kpos = ws.buffer<std::int64_t>(static_cast<std::size_t>(KT * BK));
  fill_positions(p.k_pos, p.n_kv, kpos.data());
  std::fill(kpos.data() + p.n_kv, kpos.data() + KT * BK, kpos[p.n_kv - 1]);
  AlignedBuffer<std::int64_t> kmin = ws.buffer<std::int64_t>(static_cast<std::size_t>(KT));
  AlignedBuffer<std::int64_t> kmax = ws.buffer<std::int64_t>(static_cast<std::size_t>(KT));
  for (std::int64_t kt = 0; kt < KT; ++kt)
    std::tie(kmin[kt], kmax[kt]) =
        min_max(kpos.data(), kt * BK, std::min<std::int64_t>(BK, p.n_kv - kt * BK));

  // Work order: query tiles by descending work (non-empty key tiles), then
  // (b, h); with dynamic scheduling this is longest-first, which balances
  // causal work across threads.
  AlignedBuffer<std::int64_t> qmin = ws.buffer<std::int64_t>(static_cast<std::size_t>(QT));
  AlignedBuffer<std::int64_t> qmax = ws.buffer<std::int64_t>(static_cast<std::size_t>(QT));
  AlignedBuffer<std::int64_t> qtile_cost = ws.buffer<std::int64_t>(static_cast<std::size_t>(QT));
  AlignedBuffer<std::int64_t> qtile_order = ws.buffer<std::int64_t>(static_cast<std::size_t>(QT));
  for (std::int64_t qt = 0; qt < QT; ++qt) {
    std::tie(qmin[qt], qmax[qt]) =
        min_max(qpos.data(), qt * BQ, std::min<std::int64_t>(BQ, p.n_q - qt * BQ));
    qtile_cost[qt] = 0;
    for (std::int64_t kt = 0; kt < KT; ++kt)
      qtile_cost[qt] +=
          classify_tile(qmin[qt], qmax[qt], kmin[kt], kmax[kt], vis) != TileKind::empty;
  }
  std::iota(qtile_order.data(), qtile_order.data() + QT, std::int64_t{0});
  std::stable_sort(qtile_order.data(), qtile_order.data() + QT,
                   [&](std::int64_t a, std::int64_t b) { return qtile_cost[a] > qtile_cost[b]; });

  // Packed operands. K is always packed (transposed). V is used in place when
  // it already is f32 rows of D floats, except a partial last tile, which is
  // zero-padded: that halves the kernel's extra memory on the ring's blocks.
  // The dot path packs both as bf16 pairs: K^T tiles (Dk/2, BK, 2), V tiles
  // (BK/2, D, 2).
  const bool dot = g.dot;
  const int Dk = g.Dk;
  AlignedBuffer<float> kt_pack = ws.buffer<float>(
      dot ? 0 : static_cast<std::size_t>(B * HK * KT * D * BK));  // (B, HK, KT, D, BK)
  const bool v_direct = g.v_direct, v_tail = g.v_tail;
  AlignedBuffer<float> v_pack = ws.buffer<float>(
      dot ? 0 : static_cast<std::size_t>(B * HK * g.v_tiles * BK * D));  // (B, HK, v_tiles, BK, D)
  AlignedBuffer<std::uint16_t> kt_pack_bf16 =
      ws.buffer<std::uint16_t>(dot ? static_cast<std::size_t>(B * HK * KT * Dk * BK) : 0);
  AlignedBuffer<std::uint16_t> v_pack_bf16 =
      ws.buffer<std::uint16_t>(dot ? static_cast<std::size_t>(B * HK * KT * BK * D) : 0);
  auto v_tile_of = [&](std::int64_t b, std::int64_t hk, std::int64_t kt) -> float* {
    if (dot) return nullptr;
    if (!v_direct) return v_pack.data() + ((b * HK + hk) * KT + kt) * BK * D;
    if (v_tail && kt == KT - 1) return v_pack.data() + (b * HK + hk) * BK * D;
    return nullptr;  // not packed: read in place
  };
  auto v_tile_in = [&](std::int64_t b, std::int64_t hk, std::int64_t kt) -> const float* {
    if (const float* t = v_tile_of(b, hk, kt)) return t;
    return static_cast<const float*>(p.v.data) + b * p.v.batch_stride + hk * p.v.head_stride +
           kt * BK * D;
  };
  // One key/value row (widened to f32 in `row`) into its place in the packs.
  auto pack_row = [&](std::int64_t tile, float* v_tile, int j, const std::int64_t koff,
                      const std::int64_t voff, float* row) {
    const std::size_t es = dtype_size(p.dtype);
    load_f32(static_cast<const char*>(p.k.data) + koff * static_cast<std::int64_t>(es), p.dtype,
             row, static_cast<std::size_t>(D));
    if (dot) {
      std::uint16_t* kt_tile = kt_pack_bf16.data() + tile * Dk * BK;
      for (int d = 0; d < Dk; ++d)
        kt_tile[(d / 2) * BK * 2 + j * 2 + d % 2] = d < D ? float_to_bf16(row[d]) : 0;
      std::uint16_t* v_tile_bf16 = v_pack_bf16.data() + tile * BK * D + (j / 2) * D * 2 + j % 2;
      load_f32(static_cast<const char*>(p.v.data) + voff * static_cast<std::int64_t>(es), p.dtype,
               row, static_cast<std::size_t>(D));
      for (int d = 0; d < D; ++d) v_tile_bf16[d * 2] = float_to_bf16(row[d]);
      return;
    }
    float* kt_tile = kt_pack.data() + tile * D * BK;  // (D, BK)
    for (int d = 0; d < D; ++d)
      kt_tile[static_cast<std::int64_t>(d) * BK + j] = bf16 ? round_to_bf16(row[d]) : row[d];
    if (v_tile) {
      float* vr = v_tile + static_cast<std::int64_t>(j) * D;
      load_f32(static_cast<const char*>(p.v.data) + voff * static_cast<std::int64_t>(es), p.dtype,
               vr, static_cast<std::size_t>(D));
      if (bf16)
        for (int d = 0; d < D; ++d) vr[d] = round_to_bf16(vr[d]);
    }
  };
  // Past the block's end: zero keys and values (masked scores, so 0 · V).
  auto pack_zero_row = [&](std::int64_t tile, float* v_tile, int j) {
    if (dot) {
      std::uint16_t* kt_tile = kt_pack_bf16.data() + tile * Dk * BK;
      for (int d = 0; d < Dk; ++d) kt_tile[(d / 2) * BK * 2 + j * 2 + d % 2] = 0;
      std::uint16_t* v_tile_bf16 = v_pack_bf16.data() + tile * BK * D + (j / 2) * D * 2 + j % 2;
      for (int d = 0; d < D; ++d) v_tile_bf16[d * 2] = 0;
      return;
    }
    float* kt_tile = kt_pack.data() + tile * D * BK;
    for (int d = 0; d < D; ++d) kt_tile[static_cast<std::int64_t>(d) * BK + j] = 0.0f;
    if (v_tile) std::fill_n(v_tile + static_cast<std::int64_t>(j) * D, D, 0.0f);
  };

  const TileGemm gemm_qk(BK, BQ, D, BK, D, BK, /*accumulate=*/false);       // S^T = K · Q^T
  const TileGemm gemm_pv_first(D, BQ, BK, D, BK, D, /*accumulate=*/false);  // O^T = V^T · P^T
  const TileGemm gemm_pv_more(D, BQ, BK, D, BK, D, /*accumulate=*/true);    // O^T += V^T · P^T
  // The dot path's products (made only there: they need an even depth).
  std::optional<TileGemmBf16> dot_qk, dot_pv_first, dot_pv_more;
  if (dot) {
    dot_qk.emplace(BK, BQ, Dk, Dk, BK, /*accumulate=*/false, g.dot_gemm);
    dot_pv_first.emplace(D, BQ, BK, BK, D, /*accumulate=*/false, g.dot_gemm);
    dot_pv_more.emplace(D, BQ, BK, BK, D, /*accumulate=*/true, g.dot_gemm);
  }

  const std::int64_t items = B * HQ * QT;
  const std::size_t f32_tile_bytes = static_cast<std::size_t>(BK) * D * sizeof(float);
  const std::size_t bf16_tile_bytes_k = static_cast<std::size_t>(BK) * Dk * sizeof(std::uint16_t);
  const std::size_t bf16_tile_bytes_v = static_cast<std::size_t>(BK) * D * sizeof(std::uint16_t);

#pragma omp parallel num_threads(p.threads)
  {
    AlignedBuffer<float> row = ws.buffer<float>(static_cast<std::size_t>(D));
#pragma omp for collapse(3) schedule(static)
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t hk = 0; hk < HK; ++hk)
        for (std::int64_t kt = 0; kt < KT; ++kt) {
          const std::int64_t tile = (b * HK + hk) * KT + kt;
          float* v_tile = v_tile_of(b, hk, kt);  // (BK, D) or nullptr
          for (int j = 0; j < BK; ++j) {
            const std::int64_t r = kt * BK + j;
            if (r < p.n_kv)
              pack_row(
                  tile, v_tile, j, b * p.k.batch_stride + hk * p.k.head_stride + r * p.k.row_stride,
                  b * p.v.batch_stride + hk * p.v.head_stride + r * p.v.row_stride, row.data());
            else
              pack_zero_row(tile, v_tile, j);
          }
        }

    const std::size_t qd = static_cast<std::size_t>(BQ) * D;
    AlignedBuffer<float> qbuf = ws.buffer<float>(dot ? 0 : qd);  // (BQ, D) scaled, base 2
    // The dot path's Q, unscaled, (BQ, Dk), and probabilities, (BQ, BK); rows
    // past the block's end stay 0.
    AlignedBuffer<std::uint16_t> qbuf_bf16 =
        ws.buffer<std::uint16_t>(dot ? static_cast<std::size_t>(BQ) * Dk : 0);
    AlignedBuffer<std::uint16_t> pbuf_bf16 =
        ws.buffer<std::uint16_t>(dot ? static_cast<std::size_t>(BQ) * BK : 0);
    pbuf_bf16.fill(0);
    AlignedBuffer<float> sbuf =
        ws.buffer<float>(static_cast<std::size_t>(BQ) * BK);  // (BQ, BK) scores / probs
    AlignedBuffer<float> accbuf = ws.buffer<float>(qd);       // (BQ, D) running total of P·V
    AlignedBuffer<float> compbuf = ws.buffer<float>(qd);      // (BQ, D) its Kahan terms
    AlignedBuffer<float> partbuf = ws.buffer<float>(qd);      // (BQ, D) P·V since the last fold
    AlignedBuffer<float> m2buf = ws.buffer<float>(static_cast<std::size_t>(BQ));
    AlignedBuffer<float> llanes =
        ws.buffer<float>(static_cast<std::size_t>(BQ) * kLanes);  // (BQ, kLanes)
    AlignedBuffer<float> lcomp =
        ws.buffer<float>(static_cast<std::size_t>(BQ) * kLanes);  // (BQ, kLanes) Kahan terms
    AlignedBuffer<std::int64_t> qposbuf = ws.buffer<std::int64_t>(static_cast<std::size_t>(BQ));

    // Team thread 0 is the calling thread (the one MPI knows).
    const bool poll = p.progress != nullptr && omp_get_thread_num() == 0;
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t item = 0; item < items; ++item) {
      const std::int64_t qt = qtile_order[item / (B * HQ)];
      const std::int64_t b = (item % (B * HQ)) / HQ, h = item % HQ, hk = h / group;
      const std::int64_t r0 = qt * BQ;
      const int rows = static_cast<int>(std::min<std::int64_t>(BQ, p.n_q - r0));
      const std::int64_t q_lo = qmin[qt], q_hi = qmax[qt];

      for (int i = 0; i < BQ; ++i) {
        float* qr = dot ? row.data() : qbuf.data() + static_cast<std::int64_t>(i) * D;
        std::uint16_t* qr_bf16 =
            dot ? qbuf_bf16.data() + static_cast<std::int64_t>(i) * Dk : nullptr;
        if (i < rows) {
          const std::int64_t qoff =
              b * p.q.batch_stride + h * p.q.head_stride + (r0 + i) * p.q.row_stride;
          load_f32(static_cast<const char*>(p.q.data) +
                       qoff * static_cast<std::int64_t>(dtype_size(p.dtype)),
                   p.dtype, qr, static_cast<std::size_t>(D));
          if (dot)  // a negative scale's sign goes into q (exact), its size to the scores
            for (int d = 0; d < Dk; ++d)
              qr_bf16[d] = d < D ? float_to_bf16(qscale < 0 ? -qr[d] : qr[d]) : 0;
          else
            for (int d = 0; d < D; ++d) qr[d] = (bf16 ? round_to_bf16(qr[d]) : qr[d]) * qscale;
          qposbuf[i] = qpos[r0 + i];
        } else {
          if (dot)
            std::fill_n(qr_bf16, Dk, std::uint16_t{0});
          else
            std::fill_n(qr, D, 0.0f);
          qposbuf[i] = q_hi;
        }
      }
      const std::int64_t srow = (b * HQ + h) * p.n_q + r0;
      std::copy_n(s.m2.data() + srow, rows, m2buf.data());
      spread_lanes(s.l.data() + srow, rows, llanes.data());
      lcomp.fill(0.0f);
      std::copy_n(s.acc.data() + srow * D, static_cast<std::int64_t>(rows) * D, accbuf.data());
      std::fill(accbuf.data() + static_cast<std::int64_t>(rows) * D, accbuf.data() + accbuf.size(),
                0.0f);
      compbuf.fill(0.0f);
      int pending = 0;  // tiles in partbuf since the last fold
      const std::int64_t fold_n = static_cast<std::int64_t>(rows) * D;

      for (std::int64_t kt = 0; kt < KT; ++kt) {
        const TileKind kind = classify_tile(q_lo, q_hi, kmin[kt], kmax[kt], vis);
        if (kind == TileKind::empty) continue;
        const std::int64_t tile = (b * HK + hk) * KT + kt;
        const int k_valid = static_cast<int>(std::min<std::int64_t>(BK, p.n_kv - kt * BK));
        if (dot)
          (*dot_qk)(kt_pack_bf16.data() + tile * Dk * BK, qbuf_bf16.data(), sbuf.data());
        else
          gemm_qk(kt_pack.data() + tile * D * BK, qbuf.data(), sbuf.data());
        if (kind == TileKind::diagonal || k_valid < BK)
          mask_tile(sbuf.data(), rows, BK, qposbuf.data(), kpos.data() + kt * BK, k_valid,
                    kind == TileKind::diagonal ? vis : Visibility{});
        // During the step: pull this step's V tile and the next K^T tile
        // this query tile needs (none past a causal diagonal) towards L2
        // (SoftmaxTile::prefetch).
        std::int64_t next = kt + 1;
        while (next < KT &&
               classify_tile(q_lo, q_hi, kmin[next], kmax[next], vis) == TileKind::empty)
          ++next;
        const std::int64_t next_tile = tile + (next - kt);
        const SoftmaxTile::Prefetch v_now =
            dot ? SoftmaxTile::Prefetch{v_pack_bf16.data() + tile * BK * D, bf16_tile_bytes_v}
                : SoftmaxTile::Prefetch{v_tile_in(b, hk, kt), f32_tile_bytes};
        const SoftmaxTile::Prefetch k_next =
            next == KT ? SoftmaxTile::Prefetch{}
            : dot      ? SoftmaxTile::Prefetch{kt_pack_bf16.data() + next_tile * Dk * BK,
                                          bf16_tile_bytes_k}
                       : SoftmaxTile::Prefetch{kt_pack.data() + next_tile * D * BK, f32_tile_bytes};
        softmax_tile({.s = sbuf.data(),
                      .rows = rows,
                      .bk = BK,
                      .m2 = m2buf.data(),
                      .l_lanes = llanes.data(),
                      .l_comp = lcomp.data(),
                      .acc_partial = pending > 0 ? partbuf.data() : nullptr,
                      .acc = accbuf.data(),
                      .acc_comp = compbuf.data(),
                      .head_dim = D,
                      .round_bf16 = bf16,
                      .p_bf16 = dot ? pbuf_bf16.data() : nullptr,
                      .score_scale = std::abs(qscale),
                      .prefetch = {v_now, k_next}},
                     isa);
        if (dot)
          (pending > 0 ? *dot_pv_more : *dot_pv_first)(v_pack_bf16.data() + tile * BK * D,
                                                       pbuf_bf16.data(), partbuf.data());
        else
          (pending > 0 ? gemm_pv_more : gemm_pv_first)(v_tile_in(b, hk, kt), sbuf.data(),
                                                       partbuf.data());
        if (++pending == g.fold_tiles) {
          compensated_add(accbuf.data(), compbuf.data(), partbuf.data(), fold_n, isa);
          pending = 0;
        }
        if (poll)  // items are dealt in order: thread 0's is about where the team is
          p.progress(p.progress_arg, (static_cast<double>(item) +
                                      static_cast<double>(kt + 1) / static_cast<double>(KT)) /
                                         static_cast<double>(items));
      }
      if (pending > 0) compensated_add(accbuf.data(), compbuf.data(), partbuf.data(), fold_n, isa);

      std::copy_n(m2buf.data(), rows, s.m2.data() + srow);
      sum_lanes(llanes.data(), rows, s.l.data() + srow);
      std::copy_n(accbuf.data(), static_cast<std::int64_t>(rows) * D, s.acc.data() + srow * D);
    }
  }
  t_last_workspace_bytes = ws.bytes();
}

std::size_t last_update_state_workspace_bytes() {
  return t_last_workspace_bytes;
}

// The buffers update_state makes, written out once more from the geometry:
// the test that compares this with the counted allocations fails when one
// changes without the other.
std::size_t update_state_workspace_bytes(const AttnParams& p) {
  if (p.n_q == 0 || p.n_kv == 0) return 0;
  const Geometry g = geometry(p);
  const std::int64_t BQ = g.BQ, BK = g.BK, D = g.D, lanes = kLanes;
  constexpr std::int64_t f = sizeof(float), i = sizeof(std::int64_t);
  // Checked: memory planning asks about shapes no machine can hold.
  Checked c;
  // Positions (queries, keys padded to whole tiles), tile ranges, work order.
  const std::int64_t positions =
      c.mul({c.add({p.n_q, c.mul({g.KT, BK}), c.mul({2, g.KT}), c.mul({4, g.QT})}), i});
  // Packed K^T, (B, HK, KT, D, BK), and V tiles, (B, HK, v_tiles, BK, D);
  // on the dot path bf16, K^T with depth Dk and every V tile packed.
  constexpr std::int64_t h = sizeof(std::uint16_t);
  const std::int64_t packed =
      g.dot ? c.mul({p.batch, p.heads_kv, g.KT, BK, g.Dk + D, h})
            : c.mul({p.batch, p.heads_kv, c.add({g.KT, g.v_tiles}), BK, D, f});
  // Per thread: a K/V row; Q (f32, or bf16 (BQ, Dk)), total, Kahan terms and
  // partial P·V (BQ, D); the score tile (and its bf16 probabilities on the
  // dot path); m2; l's lanes and their Kahan terms; query positions.
  const std::int64_t q_bytes = g.dot ? BQ * (g.Dk + BK) * h : BQ * D * f;
  const std::int64_t per_thread =
      (D + 3 * BQ * D + BQ * BK + BQ + 2 * BQ * lanes) * f + q_bytes + BQ * i;
  const std::int64_t total =
      c.add({positions, packed, c.mul({std::max(p.threads, 1), per_thread})});
  return c.overflow ? static_cast<std::size_t>(kBytesOverflow) : static_cast<std::size_t>(total);
}

void finalize(const AttnState& s, float* o, float* lse, int threads) {
  const std::int64_t rows = s.num_rows(), D = s.head_dim;
  const float ninf = -__builtin_inff();
#pragma omp parallel for num_threads(std::max(1, threads)) schedule(static)
  for (std::int64_t r = 0; r < rows; ++r) {
    const float l = s.l[r];
    float* orow = o + r * D;
    const float* arow = s.acc.data() + r * D;
    if (l > 0.0f) {
      const float inv = 1.0f / l;
      for (std::int64_t d = 0; d < D; ++d) orow[d] = arow[d] * inv;
      if (lse)
        lse[r] = static_cast<float>(
            (static_cast<double>(s.m2[r]) + std::log2(static_cast<double>(l))) * kLn2);
    } else {
      std::fill_n(orow, D, 0.0f);
      if (lse) lse[r] = ninf;
    }
  }
}

void merge(std::int64_t rows, std::int64_t head_dim, const float* o_a, const float* lse_a,
           const float* o_b, const float* lse_b, float* o, float* lse) {
  const float ninf = -__builtin_inff();
  for (std::int64_t r = 0; r < rows; ++r) {
    const float a = lse_a[r], b = lse_b[r];
    const float* oa = o_a + r * head_dim;
    const float* ob = o_b + r * head_dim;
    float* out = o + r * head_dim;
    if (a == ninf && b == ninf) {
      std::fill_n(out, head_dim, 0.0f);
      lse[r] = ninf;
      continue;
    }
    // Weights from e = exp(-|a - b|) alone, never from exp(x - lse) with a
    // rounded lse: the larger side gets 1/(1+e), the smaller e/(1+e), exact
    // to a few ulps whatever the magnitude of lse.
    const bool a_hi = a >= b;
    const float e = std::exp(-(a_hi ? a - b : b - a));  // 0 when the smaller is -inf
    const float w_hi = 1.0f / (1.0f + e), w_lo = e * w_hi;
    const float wa = a_hi ? w_hi : w_lo, wb = a_hi ? w_lo : w_hi;
    const float m = (a_hi ? a : b) + std::log1p(e);
    for (std::int64_t d = 0; d < head_dim; ++d)
      out[d] = (wa != 0.0f ? wa * oa[d] : 0.0f) + (wb != 0.0f ? wb * ob[d] : 0.0f);
    lse[r] = m;
  }
}

void attention_forward(const AttnParams& p, float* o, float* lse) {
  p.validate();
  AttnState s(p.batch, p.heads_q, p.n_q, p.head_dim);
  update_state(p, s);
  finalize(s, o, lse, p.threads);
}

double attention_flops(const AttnParams& p) {
  const Visibility vis = p.visibility();
  if (vis.all())
    return 4.0 * static_cast<double>(p.head_dim) * static_cast<double>(p.n_q) *
           static_cast<double>(p.n_kv) * static_cast<double>(p.batch * p.heads_q);
  Positions kp = p.k_pos.empty() ? Positions::contiguous(0, p.n_kv) : p.k_pos;
  const std::vector<PositionSegment>& segs = kp.segments();
  // Packed documents give a segment per document: when the segments ascend
  // (every layout's do), a query's window reaches a few of them, found by
  // binary search.
  std::vector<std::int64_t> seg_last(segs.size());
  bool ascending = true;
  for (std::size_t i = 0; i < segs.size(); ++i) {
    seg_last[i] = segs[i].first + (segs[i].count - 1) * segs[i].stride;
    if (i > 0 && segs[i].first <= seg_last[i - 1]) ascending = false;
  }
  std::vector<std::int64_t> qpos(static_cast<std::size_t>(p.n_q));
  fill_positions(p.q_pos, p.n_q, qpos.data());
  double pairs = 0;
  for (std::int64_t i = 0; i < p.n_q; ++i) {
    const std::int64_t x = qpos[i];
    const std::int64_t lo = vis.first_key(x), hi = vis.last_key(x);
    const std::size_t from =
        ascending ? static_cast<std::size_t>(
                        std::lower_bound(seg_last.begin(), seg_last.end(), lo) - seg_last.begin())
                  : 0;
    for (std::size_t k = from; k < segs.size(); ++k) {
      const PositionSegment& seg = segs[k];
      // Keys first + t·stride, t < count, with lo <= key <= hi.
      const std::int64_t last = seg_last[k];
      if (hi < seg.first) {
        if (ascending) break;
        continue;
      }
      if (lo > last) continue;
      const std::int64_t t0 = lo <= seg.first ? 0 : (lo - seg.first + seg.stride - 1) / seg.stride;
      const std::int64_t t1 = hi >= last ? seg.count - 1 : (hi - seg.first) / seg.stride;
      if (t1 >= t0) pairs += static_cast<double>(t1 - t0 + 1);
    }
  }
  return 4.0 * static_cast<double>(p.head_dim) * pairs * static_cast<double>(p.batch * p.heads_q);
}

std::string kernel_implementation(const AttnParams& p) {
  const TileConfig cfg = tile_config(p.cpu.tiles);
  const TileGemm g(cfg.bk, cfg.bq, static_cast<int>(p.head_dim), cfg.bk,
                   static_cast<int>(p.head_dim), cfg.bk, false);
  std::string s = g.jit() ? std::string("libxsmm-") + tile_gemm_target() : "portable-loops";
  s += std::string(" softmax-") + vector_isa_name(resolve_isa(p.cpu.isa)) +
       " bq=" + std::to_string(cfg.bq) + " bk=" + std::to_string(cfg.bk);
  s += std::string(" compute=") + compute_type_name(p.compute);
  if (p.compute == ComputeType::bf16) {
    const Bf16Products b = resolve_bf16_products(p.cpu.bf16);
    s += std::string(" products=") + bf16_products_name(b);
    if (b == Bf16Products::dot || b == Bf16Products::amx) {
      // The code each product runs, where it is not the one asked for
      // (AMX takes only dims that are multiples of 32).
      const Bf16Gemm want = b == Bf16Products::amx ? Bf16Gemm::amx : Bf16Gemm::libxsmm;
      const int D = static_cast<int>(p.head_dim), Dk = (D + 1) / 2 * 2;
      const TileGemmBf16 qk(cfg.bk, cfg.bq, Dk, Dk, cfg.bk, false, want);
      const TileGemmBf16 pv(D, cfg.bq, cfg.bk, cfg.bk, D, false, want);
      if (qk.runs() != want || pv.runs() != want)
        s += std::string("(qk:") + bf16_gemm_name(qk.runs()) + " pv:" + bf16_gemm_name(pv.runs()) +
             ")";
    }
  }
  return s;
}

}  // namespace ringattn
