// What the kernel tests share: seeded attention problems laid out densely or
// through arbitrary strides, the kernel's and the float64 reference's answers,
// and checks that name the worst element when they fail (STYLE.md item 10);
// the low-entropy tokens (symbol rows, seeded symbols) the kernel's and the
// ring's long-sequence tests are built from.
//
//   core/seeded_data.hpp  fill_seeded, splitmix64: inputs rebuilt from (seed, index)
//   kernel/attention.hpp  attention_forward, the kernel under test
//   kernel/reference.hpp  reference_attention and compare_to_reference
//   kernel/softmax_tile.hpp  cpu_runs: which vector paths this CPU executes
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "core/cpu.hpp"
#include "core/dtype.hpp"
#include "core/positions.hpp"
#include "core/seeded_data.hpp"
#include "kernel/attention.hpp"
#include "kernel/params.hpp"
#include "kernel/reference.hpp"
#include "kernel/softmax_tile.hpp"

namespace ringattn::test {

inline constexpr float kInf = std::numeric_limits<float>::infinity();

// Every compiled variant of the CPU kernel: each ISA's tile shape with each
// vector path, so a machine checks the shapes tuned for others too.
inline std::vector<CpuVariant> all_cpu_variants() {
  std::vector<CpuVariant> out;
  for (TileShape t : {TileShape::avx2, TileShape::avx512})
    for (VectorIsa isa : {VectorIsa::avx512, VectorIsa::avx2, VectorIsa::generic})
      out.push_back({t, isa});
  return out;
}

// "tiles_avx512_isa_avx2": a GoogleTest name part.
inline std::string variant_name(const CpuVariant& v) {
  return std::string("tiles_") + tile_shape_name(v.tiles) + "_isa_" + vector_isa_name(v.isa);
}

// Why this CPU cannot run the variant, or "" when it can: tests skip with it.
inline std::string cannot_run(const CpuVariant& v) {
  const std::string no_bf16 = bf16_products_missing(v.bf16);
  if (!no_bf16.empty()) return no_bf16 + " for the " + bf16_products_name(v.bf16) + " products";
  if (cpu_runs(v.isa)) return "";
  return std::string("this CPU cannot execute the ") + vector_isa_name(v.isa) +
         " path (widest here: " + vector_isa_name(resolve_isa(VectorIsa::native)) + ")";
}

// How q, k and v sit in memory. The reference always reads a dense copy of
// the same values, so a stride the kernel gets wrong cannot be hidden by the
// reference getting it wrong the same way.
enum class Layout {
  dense,        // (B, H, N, D)
  token_major,  // (B, N, H, D): sequence-first frameworks hand this over
  padded,       // (B, H, N, D + 5) with odd gaps between heads and batches
  packed_kv,    // q token-major; k and v interleaved in one (B, N, 2, H, D) buffer
  mixed,        // q padded, k token-major, v padded differently: no two alike
};

inline const char* layout_name(Layout l) {
  switch (l) {
    case Layout::dense:
      return "dense";
    case Layout::token_major:
      return "tokenmajor";
    case Layout::padded:
      return "padded";
    case Layout::packed_kv:
      return "packedkv";
    case Layout::mixed:
      return "mixed";
  }
  return "?";
}

struct Problem {
  std::string name;  // the GoogleTest parameter name: [A-Za-z0-9_]
  std::int64_t batch = 1, heads_q = 1, heads_kv = 1, n_q = 0, n_kv = 0, head_dim = 1;
  DType dtype = DType::f32;
  ComputeType compute = ComputeType::f32;
  bool causal = false;
  Window window;           // default: every key (but causal's)
  Positions q_pos, k_pos;  // empty: 0, 1, 2, ...
  Layout layout = Layout::dense;
  float scale = 0;            // 0: 1/sqrt(head_dim)
  float qk_amplitude = 2.0f;  // q and k uniform in [-a, a): a peaked, not flat, softmax
  float v_amplitude = 1.0f;   // v uniform in [-a, a)
  // q >= 0 and k <= 0 elementwise: every score is negative (about -1e4 with
  // amplitude 30 and D = 128), so the running max starts far below 0.
  bool all_scores_negative = false;
  std::uint64_t seed = 1;
  int threads = 2;
  CpuVariant variant;  // the kernel's tile shape and vector path (default: this CPU's)
};

// q (1, heads_q, n_q, head_dim) against k and v (1, heads_kv, n_kv,
// head_dim) of type t; every other field at Problem's default.
// (Designated initializers of a struct with class members warn in GCC 12.)
inline Problem shaped(std::int64_t heads_q, std::int64_t heads_kv, std::int64_t n_q,
                      std::int64_t n_kv, std::int64_t head_dim, DType t = DType::f32,
                      bool causal = false) {
  Problem p;
  p.heads_q = heads_q;
  p.heads_kv = heads_kv;
  p.n_q = n_q;
  p.n_kv = n_kv;
  p.head_dim = head_dim;
  p.dtype = t;
  p.causal = causal;
  return p;
}

// "q129_kv1000_d80_h2kv1_b2_causal_f16": a GoogleTest name part from the
// problem's shape, mask and type. GCC 12 warns falsely (-Wrestrict, GCC bug
// 105329) on "literal" + std::string, so names are built with a stream.
inline std::string shape_name(const Problem& p) {
  std::ostringstream os;
  os << "q" << p.n_q << "_kv" << p.n_kv << "_d" << p.head_dim << "_h" << p.heads_q << "kv"
     << p.heads_kv;
  if (p.batch > 1) os << "_b" << p.batch;
  os << (p.causal ? "_causal_" : "_full_") << dtype_name(p.dtype);
  return os.str();
}

// Names a GoogleTest parameter by its `name` member (a Problem's, or a
// case's): INSTANTIATE_TEST_SUITE_P(..., param_name).
struct ParamName {
  template <class P>
  std::string operator()(const ::testing::TestParamInfo<P>& info) const {
    return std::string(info.param.name);
  }
};
inline constexpr ParamName param_name{};

// Rank r of P in a zigzag layout of n tokens: chunks r and 2P-1-r of n / 2P.
// Built here, not by ring/partition, so the kernel is checked on layouts
// the library did not make.
inline Positions zigzag_positions(std::int64_t P, std::int64_t r, std::int64_t n) {
  const std::int64_t c = n / (2 * P);
  Positions pos;
  pos.append({r * c, 1, c}).append({(2 * P - 1 - r) * c, 1, c});
  return pos;
}

// ---- low-entropy tokens: what datasets/fasta_to_h5.py makes of a genome ----

// Symbol rows as the converter makes them: the one-hot of symbol s times a
// projection P (symbols, D), times a per-head W (D, D): row s of P·W, in the
// storage type. Uniform in +-sqrt(3) has variance 1, like numpy's
// standard_normal; W is scaled by 1/sqrt(D) as there.
inline std::vector<std::byte> symbol_rows(int symbols, std::int64_t D, DType t,
                                          std::uint64_t p_seed, std::uint64_t w_seed) {
  const float unit = std::sqrt(3.0f);
  const auto sd = static_cast<std::size_t>(symbols * D);
  std::vector<float> proj(sd), w(static_cast<std::size_t>(D * D)), rows(sd);
  fill_seeded(proj.data(), DType::f32, proj.size(), p_seed, 0, unit);
  fill_seeded(w.data(), DType::f32, w.size(), w_seed, 0, unit / std::sqrt(static_cast<float>(D)));
  for (int s = 0; s < symbols; ++s)
    for (std::int64_t j = 0; j < D; ++j) {
      double x = 0;
      for (std::int64_t i = 0; i < D; ++i)
        x += static_cast<double>(proj[static_cast<std::size_t>(s * D + i)]) *
             w[static_cast<std::size_t>(i * D + j)];
      rows[static_cast<std::size_t>(s * D + j)] = static_cast<float>(x);
    }
  std::vector<std::byte> out(sd * dtype_size(t));
  store_from_f32(rows.data(), t, out.data(), sd);
  return out;
}

// The symbol of the token at a global position, rebuilt from (seed,
// position) on any rank. Symbol s is drawn with weight s + 1: uneven
// frequencies, like a genome's bases and its rare unknowns.
inline int symbol_at(std::uint64_t seed, std::int64_t pos, int symbols) {
  const auto weights = static_cast<std::uint64_t>(symbols * (symbols + 1) / 2);
  std::uint64_t x = splitmix64(splitmix64(seed) ^ static_cast<std::uint64_t>(pos)) % weights;
  int s = 0;
  while (x >= static_cast<std::uint64_t>(s + 1)) x -= static_cast<std::uint64_t>(++s);
  return s;
}

// Sets (negative) or clears the sign bit of every element of a buffer of type t.
inline void force_sign(std::vector<std::byte>& buf, DType t, bool negative) {
  const std::size_t es = dtype_size(t);
  // The sign bit is the top bit of the element's last byte (little endian).
  for (std::size_t i = es - 1; i < buf.size(); i += es)
    buf[i] = negative ? (buf[i] | std::byte{0x80}) : (buf[i] & std::byte{0x7f});
}

// GoogleTest prints a failing parameter with this instead of its bytes.
inline void PrintTo(const Problem& p, std::ostream* os) {
  *os << p.name;
}

// Bytes of one element of type t that read as NaN: what the gaps of a strided
// layout hold, so a kernel that reads a gap produces NaN and fails.
inline void fill_nan(std::vector<std::byte>& buf, DType t) {
  const std::uint32_t f32_nan = 0x7fc00000u;
  const std::uint16_t f16_nan = 0x7e00u, bf16_nan = 0x7fc0u;
  const std::size_t es = dtype_size(t);
  for (std::size_t i = 0; i + es <= buf.size(); i += es) {
    if (t == DType::f32)
      std::memcpy(buf.data() + i, &f32_nan, es);
    else
      std::memcpy(buf.data() + i, t == DType::f16 ? &f16_nan : &bf16_nan, es);
  }
}

// Copies a dense (B, H, N, D) tensor of type t into dst at element offset
// b·bs + h·hs + n·rs + d (the strides of ref).
inline void scatter(const std::vector<std::byte>& dense, DType t, std::int64_t B, std::int64_t H,
                    std::int64_t N, std::int64_t D, const TensorRef& ref, std::byte* dst) {
  const std::size_t es = dtype_size(t);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t n = 0; n < N; ++n) {
        const std::int64_t from = ((b * H + h) * N + n) * D;
        const std::int64_t to = b * ref.batch_stride + h * ref.head_stride + n * ref.row_stride;
        std::memcpy(dst + static_cast<std::size_t>(to) * es,
                    dense.data() + static_cast<std::size_t>(from) * es,
                    static_cast<std::size_t>(D) * es);
      }
}

// The seeded inputs of a problem, dense (for the reference) and in the
// problem's layout (for the kernel). Holds the memory both params point into.
struct Inputs {
  std::vector<std::byte> q, k, v;  // dense (B, H, N, D), storage type
  std::vector<std::byte> q_laid, kv_laid, v_laid;
  AttnParams dense;  // the reference reads these
  AttnParams laid;   // the kernel reads these

  explicit Inputs(const Problem& pr) {
    const DType t = pr.dtype;
    const std::int64_t B = pr.batch, HQ = pr.heads_q, HK = pr.heads_kv, NQ = pr.n_q, NK = pr.n_kv,
                       D = pr.head_dim;
    const std::size_t es = dtype_size(t);
    const auto qn = static_cast<std::size_t>(B * HQ * NQ * D);
    const auto kn = static_cast<std::size_t>(B * HK * NK * D);
    q.resize(qn * es);
    k.resize(kn * es);
    v.resize(kn * es);
    fill_seeded(q.data(), t, qn, 3 * pr.seed, 0, pr.qk_amplitude);
    fill_seeded(k.data(), t, kn, 3 * pr.seed + 1, 0, pr.qk_amplitude);
    fill_seeded(v.data(), t, kn, 3 * pr.seed + 2, 0, pr.v_amplitude);
    if (pr.all_scores_negative) {
      force_sign(q, t, false);
      force_sign(k, t, true);
    }

    dense = AttnParams::dense(q.data(), k.data(), v.data(), t, B, HQ, HK, NQ, NK, D);
    dense.scale = pr.scale;
    dense.causal = pr.causal;
    dense.window = pr.window;
    dense.q_pos = pr.q_pos;
    dense.k_pos = pr.k_pos;
    dense.compute = pr.compute;
    dense.threads = pr.threads;
    dense.cpu = pr.variant;
    laid = dense;
    if (pr.layout == Layout::dense) return;

    // Strides per layout, in elements.
    auto token_major = [](std::int64_t H, std::int64_t N, std::int64_t Dm) {
      return TensorRef{nullptr, N * H * Dm, Dm, H * Dm};
    };
    auto padded = [](std::int64_t H, std::int64_t N, std::int64_t Dm, std::int64_t pad = 5) {
      const std::int64_t rs = Dm + pad, hs = N * rs + pad - 2;
      return TensorRef{nullptr, H * hs + pad + 2, hs, rs};
    };
    auto extent = [](const TensorRef& r, std::int64_t Bn, std::int64_t H, std::int64_t N,
                     std::int64_t Dm) {
      return (Bn - 1) * r.batch_stride + (H - 1) * r.head_stride + (N - 1) * r.row_stride + Dm;
    };
    TensorRef rq, rk, rv;
    if (pr.layout == Layout::padded) {
      rq = padded(HQ, NQ, D);
      rk = rv = padded(HK, NK, D);
    } else if (pr.layout == Layout::mixed) {
      rq = padded(HQ, NQ, D);
      rk = token_major(HK, NK, D);
      rv = padded(HK, NK, D, 3);
    } else {
      rq = token_major(HQ, NQ, D);
      rk = rv = token_major(HK, NK, D);
      if (pr.layout == Layout::packed_kv) {  // (B, N, 2, H, D)
        rk.batch_stride = rv.batch_stride = NK * 2 * HK * D;
        rk.row_stride = rv.row_stride = 2 * HK * D;
      }
    }
    const auto size_of = [&](const TensorRef& r, std::int64_t H, std::int64_t N) {
      return static_cast<std::size_t>(std::max<std::int64_t>(0, extent(r, B, H, N, D))) * es;
    };
    q_laid.resize(size_of(rq, HQ, NQ));
    fill_nan(q_laid, t);
    scatter(q, t, B, HQ, NQ, D, rq, q_laid.data());
    if (pr.layout == Layout::packed_kv) {
      // One buffer: row n of batch b holds k's H·D values, then v's.
      kv_laid.resize(static_cast<std::size_t>(B * NK * 2 * HK * D) * es);
      fill_nan(kv_laid, t);
      scatter(k, t, B, HK, NK, D, rk, kv_laid.data());
      scatter(v, t, B, HK, NK, D, rv, kv_laid.data() + static_cast<std::size_t>(HK * D) * es);
      rk.data = kv_laid.data();
      rv.data = kv_laid.data() + static_cast<std::size_t>(HK * D) * es;
    } else {
      kv_laid.resize(size_of(rk, HK, NK));
      v_laid.resize(size_of(rv, HK, NK));
      fill_nan(kv_laid, t);
      fill_nan(v_laid, t);
      scatter(k, t, B, HK, NK, D, rk, kv_laid.data());
      scatter(v, t, B, HK, NK, D, rv, v_laid.data());
      rk.data = kv_laid.data();
      rv.data = v_laid.data();
    }
    rq.data = q_laid.data();
    laid.q = rq;
    laid.k = rk;
    laid.v = rv;
  }
  Inputs(const Inputs&) = delete;
  Inputs& operator=(const Inputs&) = delete;
};

struct KernelOut {
  std::vector<float> o, lse;  // (B, HQ, NQ, D), (B, HQ, NQ)
};
struct RefOut {
  std::vector<double> o, lse;
};

inline KernelOut run_kernel(const AttnParams& p) {
  KernelOut r;
  r.o.assign(static_cast<std::size_t>(p.batch * p.heads_q * p.n_q * p.head_dim), -1.0f);
  r.lse.assign(static_cast<std::size_t>(p.batch * p.heads_q * p.n_q), -1.0f);
  attention_forward(p, r.o.data(), r.lse.data());
  return r;
}

inline RefOut run_reference(const AttnParams& p) {
  RefOut r;
  r.o.resize(static_cast<std::size_t>(p.batch * p.heads_q * p.n_q * p.head_dim));
  r.lse.resize(static_cast<std::size_t>(p.batch * p.heads_q * p.n_q));
  reference_attention(p, r.o.data(), r.lse.data());
  return r;
}

// "(b, h, row[, d])" of flat index i in a dense (B, H, N[, D]) output.
inline std::string where(std::int64_t i, std::int64_t H, std::int64_t N, std::int64_t D) {
  std::ostringstream os;
  const std::int64_t d = i % D, row = i / D;
  os << "(b " << row / N / H << ", h " << row / N % H << ", row " << row % N;
  if (D > 1) os << ", d " << d;
  os << ")";
  return os.str();
}

struct Tolerance {
  double o = 1e-5;    // max|o - ref| / max|ref| (or / max|v|, below)
  double lse = 1e-5;  // max|lse - ref| / max(1, max|ref|)
  // Measure o's error against the largest |v| instead of the largest |ref|.
  // o is a convex combination of v rows, so |v| bounds it; when the softmax
  // is flat, |o| shrinks like 1/sqrt(n_kv) while errors made relative to each
  // v (rounding v or p to bf16) shrink no faster, so max|ref| overstates them.
  bool o_against_values = false;
};

struct Errors {
  double o = 0, lse = 0;  // as the tolerances measure them
};

// The largest |v| of the problem (as stored).
inline double max_abs_value(const AttnParams& p) {
  double m = 0;
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.heads_kv; ++h)
      for (std::int64_t n = 0; n < p.n_kv; ++n)
        for (std::int64_t d = 0; d < p.head_dim; ++d) {
          const std::int64_t i =
              b * p.v.batch_stride + h * p.v.head_stride + n * p.v.row_stride + d;
          m = std::max(m, static_cast<double>(std::fabs(
                              element_f32(p.v.data, p.dtype, static_cast<std::size_t>(i)))));
        }
  return m;
}

// Checks the kernel's answer against the reference's: o finite everywhere,
// lse never NaN or +inf, both within tol. Names the worst element on failure.
inline Errors expect_matches_reference(const AttnParams& p, const KernelOut& got, const RefOut& ref,
                                       Tolerance tol) {
  const std::int64_t H = p.heads_q, N = p.n_q, D = p.head_dim;
  std::int64_t bad = 0;
  for (std::size_t i = 0; i < got.o.size(); ++i)
    if (!std::isfinite(got.o[i]) && bad++ == 0)
      ADD_FAILURE() << "o is not finite at " << where(static_cast<std::int64_t>(i), H, N, D) << ": "
                    << got.o[i];
  for (std::size_t i = 0; i < got.lse.size(); ++i)
    if ((std::isnan(got.lse[i]) || got.lse[i] == kInf) && bad++ == 0)
      ADD_FAILURE() << "lse is NaN or +inf at " << where(static_cast<std::int64_t>(i), H, N, 1)
                    << ": " << got.lse[i];
  EXPECT_EQ(bad, 0) << "non-finite outputs";

  Errors e;
  Comparison co =
      compare_to_reference(got.o.data(), ref.o.data(), static_cast<std::int64_t>(got.o.size()));
  if (tol.o_against_values) {
    co.scale = std::max(max_abs_value(p), 1e-30);
    co.rel_err = co.max_abs_err / co.scale;
  }
  const Comparison cl = compare_to_reference(got.lse.data(), ref.lse.data(),
                                             static_cast<std::int64_t>(got.lse.size()));
  e.o = got.o.empty() ? 0.0 : co.rel_err;
  e.lse = got.lse.empty() ? 0.0 : cl.max_abs_err / std::max(1.0, cl.scale);
  EXPECT_LE(e.o, tol.o) << "o: worst at " << where(co.worst, H, N, D) << ": kernel "
                        << co.worst_value << ", reference " << co.worst_ref << ", |err| "
                        << co.max_abs_err << " against max|" << (tol.o_against_values ? "v" : "ref")
                        << "| " << co.scale;
  EXPECT_LE(e.lse, tol.lse) << "lse: worst at " << where(cl.worst, H, N, 1) << ": kernel "
                            << cl.worst_value << ", reference " << cl.worst_ref << ", |err| "
                            << cl.max_abs_err << " against max(1, max|ref|) "
                            << std::max(1.0, cl.scale);
  return e;
}

// Runs the kernel on the problem's layout and the reference on its dense copy,
// checks them, and prints the errors (they are what the tolerances were set
// from).
inline Errors check_problem(const Problem& pr, Tolerance tol) {
  const Inputs in(pr);
  const KernelOut got = run_kernel(in.laid);
  const RefOut ref = run_reference(in.dense);
  const Errors e = expect_matches_reference(in.dense, got, ref, tol);
  std::printf("[  errors  ] o %.2e  lse %.2e  (tolerance o %.1e, lse %.1e)\n", e.o, e.lse, tol.o,
              tol.lse);
  return e;
}

}  // namespace ringattn::test
