// Long blocks of low entropy, as genomes give them: every token is one of a
// few symbols, so K and V hold only a few distinct rows and the kernel adds
// the same few products up to millions of times. fp32 rounding of such sums
// is systematic, not random: it grows with the keys a plain sum covers and
// does not cancel. The cases run on every tile shape and every vector path
// this CPU executes (the longest on each tile shape), against a float64
// reference computed from the symbols' counts (exact and cheap for any n_kv),
// itself checked against the library's reference_attention.
//
//   attn_test_util.hpp    all_cpu_variants, cannot_run
//   kernel/attention.hpp  attention_forward, update_state, finalize
//   kernel/reference.hpp  reference_attention, compare_to_reference
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "core/positions.hpp"
#include "core/seeded_data.hpp"
#include "kernel/attention.hpp"
#include "kernel/attn_test_util.hpp"
#include "kernel/reference.hpp"
#include "kernel/state.hpp"

namespace ringattn::test {
namespace {

// The fp32 bound `ringattn verify` checks: max|o - ref| <= 1e-5 max|ref|.
constexpr double kOTol = 1e-5;

struct LowEntropyCase {
  std::int64_t n_kv = 0;
  int symbols = 5;  // distinct tokens: 5 = {A, C, G, T, unknown}
  bool causal = false;
  DType dtype = DType::f32;
  std::int64_t head_dim = 64;
  std::int64_t n_q = 16;
  CpuVariant variant;
};

std::string case_name(const LowEntropyCase& c) {
  std::ostringstream os;
  os << "kv" << c.n_kv << "_sym" << c.symbols << (c.causal ? "_causal_" : "_full_")
     << dtype_name(c.dtype) << "_d" << c.head_dim << "_" << variant_name(c.variant);
  return os.str();
}

// GoogleTest prints a failing parameter with this instead of its bytes.
void PrintTo(const LowEntropyCase& c, std::ostream* os) {
  *os << case_name(c);
}

// A block tokenised as datasets/fasta_to_h5.py does with k = 1: token t's
// feature is the one-hot of its symbol, projected to D by P (symbols, D) and
// per head by W_q, W_k, W_v (D, D), so q, k and v rows are rows of
// P·W_q, P·W_k, P·W_v. Symbol frequencies are uneven (symbol s is drawn with
// weight s + 1), like a genome's bases and its rare unknowns.
struct TokenBlock {
  std::int64_t n_q, n_kv, D;
  int symbols;
  DType dtype;
  bool causal;
  std::vector<std::byte> sym_q, sym_k, sym_v;  // (symbols, D) each, as stored
  std::vector<int> key_symbol;                 // (n_kv)
  std::vector<int> query_symbol;               // (n_q)
  std::vector<std::int64_t> query_pos;         // (n_q) global positions
  std::vector<std::byte> q, k, v;              // (n_q, D), (n_kv, D), (n_kv, D)
  AttnParams p;

  explicit TokenBlock(const LowEntropyCase& c, std::uint64_t seed = 1)
      : n_q(c.n_q),
        n_kv(c.n_kv),
        D(c.head_dim),
        symbols(c.symbols),
        dtype(c.dtype),
        causal(c.causal) {
    const std::size_t es = dtype_size(dtype);
    sym_q = symbol_rows(symbols, D, dtype, seed, seed + 1);
    sym_k = symbol_rows(symbols, D, dtype, seed, seed + 2);
    sym_v = symbol_rows(symbols, D, dtype, seed, seed + 3);
    key_symbol.resize(static_cast<std::size_t>(n_kv));
    k.resize(static_cast<std::size_t>(n_kv * D) * es);
    v.resize(k.size());
    const std::size_t row_bytes = static_cast<std::size_t>(D) * es;
    for (std::int64_t j = 0; j < n_kv; ++j) {
      const int s = key_symbol[static_cast<std::size_t>(j)] = symbol_at(seed + 7, j, symbols);
      std::copy_n(sym_k.data() + static_cast<std::size_t>(s) * row_bytes, row_bytes,
                  k.data() + static_cast<std::size_t>(j) * row_bytes);
      std::copy_n(sym_v.data() + static_cast<std::size_t>(s) * row_bytes, row_bytes,
                  v.data() + static_cast<std::size_t>(j) * row_bytes);
    }
    // Causal: queries spread over the sequence, the last one at its end, so
    // they see prefixes of every length up to all n_kv keys. The query of a
    // token is its symbol's row, as in self-attention.
    const std::int64_t stride = n_kv / n_q;
    q.resize(static_cast<std::size_t>(n_q) * row_bytes);
    for (std::int64_t i = 0; i < n_q; ++i) {
      const std::int64_t pos = causal ? n_kv - 1 - (n_q - 1 - i) * stride : i;
      query_pos.push_back(pos);
      query_symbol.push_back(key_symbol[static_cast<std::size_t>(pos)]);
      std::copy_n(sym_q.data() + static_cast<std::size_t>(query_symbol.back()) * row_bytes,
                  row_bytes, q.data() + static_cast<std::size_t>(i) * row_bytes);
    }
    p = AttnParams::dense(q.data(), k.data(), v.data(), dtype, 1, 1, 1, n_q, n_kv, D);
    p.causal = causal;
    if (causal) p.q_pos = Positions::strided(query_pos.front(), stride, n_q);
    p.threads = 2;
    p.cpu = c.variant;
  }

  // Query i's attention in float64 from the counts c_s of each symbol among
  // the keys it sees: o = sum_s c_s e^(x_s - m) v_s / sum_s c_s e^(x_s - m),
  // x_s = scale · q_i · k_s on the stored values.
  std::vector<double> reference() const {
    std::vector<double> o(static_cast<std::size_t>(n_q * D));
    std::vector<std::int64_t> count(static_cast<std::size_t>(symbols), 0);
    const double scale = p.effective_scale();
    std::int64_t counted = 0;
    for (std::int64_t i = 0; i < n_q; ++i) {  // query positions increase
      const std::int64_t sees = causal ? query_pos[static_cast<std::size_t>(i)] + 1 : n_kv;
      for (; counted < sees; ++counted) ++count[static_cast<std::size_t>(key_symbol[counted])];
      const auto qs = static_cast<std::size_t>(query_symbol[static_cast<std::size_t>(i)]);
      std::vector<double> x(static_cast<std::size_t>(symbols));
      double m = -std::numeric_limits<double>::infinity();
      for (int s = 0; s < symbols; ++s) {
        double dot = 0;
        for (std::int64_t d = 0; d < D; ++d)
          dot += static_cast<double>(element_f32(sym_q.data(), dtype, qs * D + d)) *
                 element_f32(sym_k.data(), dtype, static_cast<std::size_t>(s * D + d));
        x[s] = dot * scale;
        if (count[s] > 0) m = std::max(m, x[s]);
      }
      double l = 0;
      double* orow = o.data() + i * D;
      for (int s = 0; s < symbols; ++s) {
        if (count[s] == 0) continue;
        const double w = static_cast<double>(count[s]) * std::exp(x[s] - m);
        l += w;
        for (std::int64_t d = 0; d < D; ++d)
          orow[d] += w * element_f32(sym_v.data(), dtype, static_cast<std::size_t>(s * D + d));
      }
      for (std::int64_t d = 0; d < D; ++d) orow[d] /= l;
    }
    return o;
  }
};

// The o error against max|ref|, printed, and checked against the bound.
void expect_within_bound(const std::vector<float>& o, const std::vector<double>& ref,
                         const std::string& what) {
  const Comparison c = compare_to_reference(o.data(), ref.data(), std::ssize(o));
  std::printf("[  errors  ] o %.2e  (%s)\n", c.rel_err, what.c_str());
  EXPECT_LE(c.rel_err, kOTol) << what << ": worst o[" << c.worst << "] = " << c.worst_value
                              << ", float64 " << c.worst_ref << ", |err| " << c.max_abs_err
                              << " against max|ref| " << c.scale;
}

std::vector<float> run_forward(const AttnParams& p) {
  std::vector<float> o(static_cast<std::size_t>(p.n_q * p.head_dim));
  attention_forward(p, o.data(), nullptr);
  return o;
}

// The counting reference is the library's float64 reference, on a block
// short enough for the latter.
TEST(LowEntropyReference, CountsGiveTheDirectFloat64Answer) {
  for (const bool causal : {false, true})
    for (const DType t : {DType::f32, DType::f16}) {
      LowEntropyCase c;
      c.n_kv = 3000;
      c.causal = causal;
      c.dtype = t;
      const TokenBlock blk(c);
      std::vector<double> direct(static_cast<std::size_t>(c.n_q * c.head_dim));
      reference_attention(blk.p, direct.data(), nullptr);
      const std::vector<double> counted = blk.reference();
      double worst = 0;
      for (std::size_t i = 0; i < direct.size(); ++i)
        worst = std::max(worst, std::fabs(direct[i] - counted[i]));
      EXPECT_LT(worst, 1e-12) << (causal ? "causal " : "full ") << dtype_name(t);
    }
}

// ---- one block of up to 2^22 keys, on every variant ----------------------------------

// Every combination at 2^16 keys, where a fold too long shows (the old
// kernel's 2048-key partial sums with the AVX-512 tiles: up to 1.9e-5
// there); 2^20 keys on every variant and 2^22 (the longest the guarantee
// covers) on each tile shape, where a sum that drifts with length shows (the
// old kernel's plain l: 2.0e-5 to 7.1e-5 at 2^20 on every variant).
std::vector<LowEntropyCase> low_entropy_cases() {
  std::vector<LowEntropyCase> out;
  for (const CpuVariant& v : all_cpu_variants()) {
    for (const int symbols : {2, 5, 16})
      for (const bool causal : {false, true})
        for (const DType t : {DType::f32, DType::f16}) {
          LowEntropyCase c;
          c.n_kv = 1 << 16;
          c.symbols = symbols;
          c.causal = causal;
          c.dtype = t;
          c.variant = v;
          out.push_back(c);
        }
    LowEntropyCase c;
    c.n_kv = 1 << 20;
    c.symbols = 2;
    c.causal = true;
    c.head_dim = 32;
    c.variant = v;
    out.push_back(c);
  }
  // D = 16 keeps K, V and packed K^T at 256 MiB each.
  for (const TileShape t : {TileShape::avx2, TileShape::avx512}) {
    LowEntropyCase c;
    c.n_kv = 1 << 22;
    c.causal = true;
    c.head_dim = 16;
    c.variant = {t, VectorIsa::native};
    out.push_back(c);
  }
  return out;
}

class LowEntropy : public ::testing::TestWithParam<LowEntropyCase> {};

TEST_P(LowEntropy, WithinFp32BoundOfFloat64) {
  const LowEntropyCase& c = GetParam();
  if (const std::string why = cannot_run(c.variant); !why.empty()) GTEST_SKIP() << why;
  const TokenBlock blk(c);
  expect_within_bound(run_forward(blk.p), blk.reference(), kernel_implementation(blk.p));
}

INSTANTIATE_TEST_SUITE_P(Kernel, LowEntropy, ::testing::ValuesIn(low_entropy_cases()),
                         [](const ::testing::TestParamInfo<LowEntropyCase>& param) {
                           return case_name(param.param);
                         });

// ---- the same keys folded in ring steps ------------------------------------------------

// A ring of P ranks folds the keys in P blocks, carrying (m, l, acc) between
// them: the bound holds for the carried state too.
class LowEntropyRingSteps : public ::testing::TestWithParam<int> {};

TEST_P(LowEntropyRingSteps, FoldedBlocksWithinFp32Bound) {
  const int steps = GetParam();
  LowEntropyCase c;
  c.n_kv = 1 << 20;
  c.causal = true;
  c.head_dim = 32;
  const TokenBlock blk(c);
  AttnState s(1, 1, c.n_q, c.head_dim);
  const std::size_t row_bytes = static_cast<std::size_t>(c.head_dim) * dtype_size(c.dtype);
  for (int r = 0; r < steps; ++r) {
    const std::int64_t first = c.n_kv * r / steps, last = c.n_kv * (r + 1) / steps;
    AttnParams p = blk.p;
    p.k.data = blk.k.data() + static_cast<std::size_t>(first) * row_bytes;
    p.v.data = blk.v.data() + static_cast<std::size_t>(first) * row_bytes;
    p.n_kv = last - first;
    p.k_pos = Positions::contiguous(first, last - first);
    update_state(p, s);
  }
  std::vector<float> o(static_cast<std::size_t>(c.n_q * c.head_dim));
  finalize(s, o.data(), nullptr);
  std::ostringstream what;
  what << steps << " ring steps, " << kernel_implementation(blk.p);
  expect_within_bound(o, blk.reference(), what.str());
}

INSTANTIATE_TEST_SUITE_P(Kernel, LowEntropyRingSteps, ::testing::Values(2, 3, 4),
                         [](const ::testing::TestParamInfo<int>& param) {
                           return std::to_string(param.param) + "_steps";
                         });

}  // namespace
}  // namespace ringattn::test
