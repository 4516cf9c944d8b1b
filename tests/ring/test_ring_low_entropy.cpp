// Long, low-entropy sequences through the whole ring, as genomes give them
// (issue 12: real genomes failed `ringattn verify` on AVX-512 machines). With
// one token per nucleotide every K and V row is one of a few symbol rows, so
// the fp32 sums of P·V repeat the same products and their rounding does not
// cancel: it grows with the keys a plain partial sum covers, which depends on
// the tile shape. The kernel tests check one block; these check what a job
// runs: each rank folds every other rank's block in ring steps, carrying
// (m, l, acc), over contiguous, zigzag and striped partitions, with uneven
// shards and partial last tiles, on every tile shape and vector path this CPU
// executes (RingOptions::cpu picks them).
//
// Inputs are one-hot tokens through a seeded random projection, as
// datasets/fasta_to_h5.py --k 1 makes them (2, 5 or 16 distinct tokens;
// grouped-query heads). Non-causal: a few queries per rank against 2^17 keys.
// Causal: the ring's queries sit at the partition's positions 0..N-1 (a
// RingLayout has no query offset), so every row is computed; N = 2^14 keeps
// that cheap while the last rows still see eight of the 2048-key plain
// partial sums the AVX-512 tiles made before the fix.
// The float64 reference comes from the symbols' counts among the keys each
// query sees (exact and cheap for any length), and is itself checked against
// the library's reference_attention on a short sequence.
//
//   common/mpi_test_util.hpp  world_rank, world_size, on_every_rank
//   kernel/attn_test_util.hpp all_cpu_variants, variant_name, cannot_run
//   ring/cpu_ring.hpp         CpuRing, the ring under test
//   kernel/reference.hpp      reference_attention, compare_to_reference
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
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
#include "ring/cpu_ring.hpp"
#include "ring/partition.hpp"

#include "../common/mpi_test_util.hpp"
#include "../kernel/attn_test_util.hpp"

namespace ringattn::test {
namespace {

// The fp32 bound `ringattn verify` checks: max|o - ref| <= 1e-5 max|ref|.
constexpr double kOTol = 1e-5;

// One key/value head; cases with two query heads share it (grouped-query
// attention, as the phage case).
constexpr std::int64_t kHeadsKv = 1;

struct LowEntropyRingCase {
  PartitionKind partition = PartitionKind::contiguous;
  bool causal = false;
  int symbols = 5;  // distinct tokens: 5 = {A, C, G, T, unknown}
  DType dtype = DType::f32;
  CpuVariant variant;  // native: this CPU's vector path, with the case's tile shape
  std::int64_t nq = 0, nkv = 0, d = 64;
  std::int64_t hq = 1;  // query heads over kHeadsKv

  std::string name() const {
    std::ostringstream os;
    os << partition_name(partition) << (causal ? "_causal" : "_full") << "_sym" << symbols << "_"
       << dtype_name(dtype) << "_" << variant_name(variant) << "_h" << hq << "_n" << nq << "x"
       << nkv << "_d" << d;
    return os.str();
  }
};

// GoogleTest prints a failing parameter with this instead of its bytes.
void PrintTo(const LowEntropyRingCase& c, std::ostream* os) {
  *os << c.name();
}

// One problem over MPI_COMM_WORLD: this rank's shards of Q (B = 1, hq,
// local q rows, D) and K, V (1, kHeadsKv, local kv rows, D), and its rows of
// the float64 answer. Self-attention (causal) uses the key sequence's tokens
// as queries; cross-attention draws its queries' tokens apart.
struct LowEntropyRingProblem {
  LowEntropyRingCase c;
  Partition qp, kp;
  std::uint64_t seed;
  std::vector<std::vector<std::byte>> sym_q;  // per query head: (symbols, D), stored
  std::vector<std::byte> sym_k, sym_v;        // (symbols, D) each, stored
  std::vector<std::byte> qs, ks, vs;          // this rank's shards
  std::vector<double> ref, ref_lse;           // (1, hq, local q rows[, D])

  LowEntropyRingProblem(const LowEntropyRingCase& cs, std::uint64_t sd)
      : c(cs),
        qp(cs.partition, cs.nq, world_size()),
        kp(cs.partition, cs.nkv, world_size()),
        seed(sd) {
    const int r = world_rank(), S = c.symbols;
    const std::int64_t D = c.d;
    for (std::int64_t h = 0; h < c.hq; ++h)
      sym_q.push_back(symbol_rows(S, D, c.dtype, seed, seed + 10 + static_cast<std::uint64_t>(h)));
    sym_k = symbol_rows(S, D, c.dtype, seed, seed + 1);
    sym_v = symbol_rows(S, D, c.dtype, seed, seed + 2);

    const std::size_t row = static_cast<std::size_t>(D) * dtype_size(c.dtype);
    const Positions kpos = kp.positions(r), qpos = qp.positions(r);
    ks.resize(static_cast<std::size_t>(kpos.size()) * row);
    vs.resize(ks.size());
    for (std::int64_t i = 0; i < kpos.size(); ++i) {
      const auto s = static_cast<std::size_t>(symbol_at(seed, kpos[i], S));
      std::memcpy(ks.data() + static_cast<std::size_t>(i) * row, sym_k.data() + s * row, row);
      std::memcpy(vs.data() + static_cast<std::size_t>(i) * row, sym_v.data() + s * row, row);
    }
    const std::int64_t nloc = qpos.size();
    qs.resize(static_cast<std::size_t>(c.hq * nloc) * row);
    for (std::int64_t h = 0; h < c.hq; ++h)
      for (std::int64_t i = 0; i < nloc; ++i)
        std::memcpy(qs.data() + static_cast<std::size_t>(h * nloc + i) * row,
                    sym_q[h].data() + static_cast<std::size_t>(query_symbol(qpos[i])) * row, row);
    reference(qpos);
  }

  int query_symbol(std::int64_t pos) const {
    return c.causal ? symbol_at(seed, pos, c.symbols) : symbol_at(seed + 5, pos, c.symbols);
  }

  RingLayout layout() const { return {qp, kp, {c.dtype, 1, kHeadsKv, c.d}, c.hq, {}}; }

  // Query (h, pos) in float64 from the counts n_s of each symbol among the
  // keys it sees: o = sum_s n_s e^(x_s - m) v_s / sum_s n_s e^(x_s - m),
  // x_s = scale · q · k_s on the stored values, lse = m + log(sum ...).
  void reference(const Positions& qpos) {
    const int S = c.symbols;
    const std::int64_t D = c.d, nloc = qpos.size();
    AttnParams kernel_scale;  // the kernel's fp32 1/sqrt(D), which its scores use
    kernel_scale.head_dim = D;
    const double scale = kernel_scale.effective_scale();
    // counts[j * S + s]: symbol s among keys 0 .. j-1 (causal needs every
    // prefix; otherwise only the whole sequence's).
    const std::int64_t prefixes = c.causal ? c.nkv + 1 : 2;
    std::vector<std::int64_t> counts(static_cast<std::size_t>(prefixes * S), 0);
    std::vector<std::int64_t> total(static_cast<std::size_t>(S), 0);
    for (std::int64_t j = 0; j < c.nkv; ++j) {
      ++total[static_cast<std::size_t>(symbol_at(seed, j, S))];
      if (c.causal) std::copy(total.begin(), total.end(), counts.begin() + (j + 1) * S);
    }
    if (!c.causal) std::copy(total.begin(), total.end(), counts.begin() + S);

    auto at = [&](const std::vector<std::byte>& rows, std::int64_t s, std::int64_t d) {
      return static_cast<double>(
          element_f32(rows.data(), c.dtype, static_cast<std::size_t>(s * D + d)));
    };
    ref.assign(static_cast<std::size_t>(c.hq * nloc * D), 0.0);
    ref_lse.assign(static_cast<std::size_t>(c.hq * nloc), 0.0);
    std::vector<double> x(static_cast<std::size_t>(S));
    for (std::int64_t h = 0; h < c.hq; ++h)
      for (std::int64_t i = 0; i < nloc; ++i) {
        const std::int64_t pos = qpos[i], qsym = query_symbol(pos);
        // Causal: key j visible when j <= pos (keys past the sequence: none).
        const std::int64_t seen = c.causal ? std::min(pos + 1, c.nkv) : 1;
        const std::int64_t* n = counts.data() + seen * S;
        double m = -std::numeric_limits<double>::infinity();
        for (int s = 0; s < S; ++s) {
          double dot = 0;
          for (std::int64_t d = 0; d < D; ++d) dot += at(sym_q[h], qsym, d) * at(sym_k, s, d);
          x[s] = dot * scale;
          if (n[s] > 0) m = std::max(m, x[s]);
        }
        double l = 0;
        double* o = ref.data() + (h * nloc + i) * D;
        for (int s = 0; s < S; ++s) {
          if (n[s] == 0) continue;
          const double w = static_cast<double>(n[s]) * std::exp(x[s] - m);
          l += w;
          for (std::int64_t d = 0; d < D; ++d) o[d] += w * at(sym_v, s, d);
        }
        for (std::int64_t d = 0; d < D; ++d) o[d] /= l;
        ref_lse[static_cast<std::size_t>(h * nloc + i)] = m + std::log(l);
      }
  }
};

struct RingOut {
  std::vector<float> o, lse;
};

RingOut run_ring(const LowEntropyRingProblem& pr, const CpuVariant& variant) {
  CpuRing ring(MPI_COMM_WORLD);
  const RingLayout layout = pr.layout();
  const KvBlockRef home = ring.home_block(layout);
  EXPECT_EQ(home.layout.bytes(), pr.ks.size() + pr.vs.size()) << "the home block's size";
  std::memcpy(home.k(), pr.ks.data(), pr.ks.size());
  std::memcpy(home.v(), pr.vs.data(), pr.vs.size());
  RingOptions opt;
  opt.causal = pr.c.causal;
  opt.threads = default_threads();  // this rank's share of the node's cores
  opt.cpu = variant;
  RingOut out;
  out.lse.assign(pr.ref_lse.size(), -7.0f);  // every element must be written
  ring.run(layout, pr.qs.data(), out.lse.data(), opt);
  out.o.assign(ring.output(), ring.output() + pr.ref.size());
  return out;
}

// The largest of x over every rank.
double max_over_ranks(double x) {
  double all = 0;
  MPI_Allreduce(&x, &all, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return all;
}

// o and lse of every rank against the float64 answer, as `ringattn verify`
// measures them: the worst |o - ref| of all ranks against the largest |ref|
// of all ranks (every rank reaches the same verdict, rank 0 prints it), and
// lse within kOTol of max(1, its scale).
void expect_within_bound(const LowEntropyRingProblem& pr, const RingOut& got,
                         const std::string& what) {
  const int r = world_rank();
  const Comparison co = compare_to_reference(got.o.data(), pr.ref.data(), std::ssize(got.o));
  const Comparison cl =
      compare_to_reference(got.lse.data(), pr.ref_lse.data(), std::ssize(got.lse));
  const double o_err = max_over_ranks(co.max_abs_err), o_scale = max_over_ranks(co.scale);
  const double lse_err = max_over_ranks(cl.max_abs_err), lse_scale = max_over_ranks(cl.scale);
  const double rel = o_err / o_scale, lse_rel = lse_err / std::max(1.0, lse_scale);
  if (r == 0) std::printf("[  errors  ] o %.2e  lse %.2e  (%s)\n", rel, lse_rel, what.c_str());
  EXPECT_LE(rel, kOTol) << what << ": o's worst error over the ranks " << o_err
                        << " against max|ref| " << o_scale << "; this rank's (" << r << ") worst o["
                        << co.worst << "] = " << co.worst_value << ", float64 " << co.worst_ref;
  EXPECT_LE(lse_rel, kOTol) << what << ": lse's worst error over the ranks " << lse_err
                            << "; this rank's (" << r << ") worst lse[" << cl.worst
                            << "] = " << cl.worst_value << ", float64 " << cl.worst_ref;
  EXPECT_GT(o_scale, 0.0) << "a reference of zeros tests nothing";
}

// ---- the counting reference is the float64 reference -----------------------------------

// On a sequence short enough for reference_attention over the whole of it,
// each rank's rows of the counting reference equal that one's, causal and
// not, in both storage types (the ring cases below trust it alone).
TEST(LowEntropyRingReference, CountsGiveTheDirectFloat64Answer) {
  for (const bool causal : {false, true})
    for (const DType t : {DType::f32, DType::f16}) {
      LowEntropyRingCase c;
      c.partition = PartitionKind::zigzag;
      c.causal = causal;
      c.dtype = t;
      c.nq = causal ? 700 : 13;
      c.nkv = 700;
      c.d = 32;
      c.hq = 2;
      const LowEntropyRingProblem pr(c, 3);
      // The whole Q, K, V from the same symbols, (1, H, N, D) dense.
      const std::size_t row = static_cast<std::size_t>(c.d) * dtype_size(t);
      std::vector<std::byte> q(static_cast<std::size_t>(c.hq * c.nq) * row),
          k(static_cast<std::size_t>(c.nkv) * row), v(k.size());
      for (std::int64_t j = 0; j < c.nkv; ++j) {
        const auto s = static_cast<std::size_t>(symbol_at(pr.seed, j, c.symbols));
        std::memcpy(k.data() + j * row, pr.sym_k.data() + s * row, row);
        std::memcpy(v.data() + j * row, pr.sym_v.data() + s * row, row);
      }
      for (std::int64_t h = 0; h < c.hq; ++h)
        for (std::int64_t i = 0; i < c.nq; ++i)
          std::memcpy(q.data() + static_cast<std::size_t>(h * c.nq + i) * row,
                      pr.sym_q[h].data() + static_cast<std::size_t>(pr.query_symbol(i)) * row, row);
      AttnParams p =
          AttnParams::dense(q.data(), k.data(), v.data(), t, 1, c.hq, kHeadsKv, c.nq, c.nkv, c.d);
      p.causal = causal;
      std::vector<double> o(static_cast<std::size_t>(c.hq * c.nq * c.d)),
          lse(static_cast<std::size_t>(c.hq * c.nq));
      reference_attention(p, o.data(), lse.data());

      const Positions pos = pr.qp.positions(world_rank());
      double worst = 0;
      for (std::int64_t h = 0; h < c.hq; ++h)
        for (std::int64_t i = 0; i < pos.size(); ++i) {
          const std::int64_t g = h * c.nq + pos[i], l = h * pos.size() + i;
          worst = std::max(worst, std::fabs(lse[g] - pr.ref_lse[l]));
          for (std::int64_t d = 0; d < c.d; ++d)
            worst = std::max(worst, std::fabs(o[g * c.d + d] - pr.ref[l * c.d + d]));
        }
      EXPECT_LT(worst, 1e-12) << "rank " << world_rank() << (causal ? " causal " : " full ")
                              << dtype_name(t);
    }
}

// ---- the ring on long low-entropy sequences -------------------------------------------

// Keys past a power of two leave a partial last tile and uneven shards at
// every rank count.
constexpr std::int64_t kLongKeys = (std::int64_t{1} << 17) + 37;     // non-causal: few queries
constexpr std::int64_t kFewQueries = 16;                             // 4 to 16 per rank
constexpr std::int64_t kCausalTokens = (std::int64_t{1} << 14) + 5;  // causal: every row

LowEntropyRingCase long_case(PartitionKind pk, bool causal, int symbols, DType t, CpuVariant v) {
  LowEntropyRingCase c;
  c.partition = pk;
  c.causal = causal;
  c.symbols = symbols;
  c.dtype = t;
  c.variant = v;
  c.nq = causal ? kCausalTokens : kFewQueries;
  c.nkv = causal ? kCausalTokens : kLongKeys;
  c.hq = causal ? 1 : 2;  // causal computes every row: one head keeps it cheap
  return c;
}

// Every tile shape x partition x mask in both storage types, on this CPU's
// vector path: 2 symbols (the worst case) in one storage type, 5 or 16 in
// the other, so each tile shape meets each symbol count causal and not. Then
// each vector path on each tile shape, on the worst case (the vector code is
// the same whatever the mask). 30 ring runs keep the 4-rank entry near 13 s
// on 2 cores. With the fold of P·V back at every 8 key tiles (the numerics
// before the fix) every 2-symbol case on the AVX-512 tiles fails, causal and
// not, on every partition and vector path, at 1 to 4 ranks (up to 1.8e-5);
// today's worst is 2.4e-6.
std::vector<LowEntropyRingCase> low_entropy_ring_cases() {
  std::vector<LowEntropyRingCase> out;
  for (const TileShape tiles : {TileShape::avx2, TileShape::avx512})
    for (const bool causal : {false, true}) {
      // Which storage type gets the 2-symbol inputs alternates with the tile shape and mask.
      const DType worst = (tiles == TileShape::avx2) == causal ? DType::f32 : DType::f16;
      for (const PartitionKind pk :
           {PartitionKind::contiguous, PartitionKind::zigzag, PartitionKind::striped})
        for (const DType t : {DType::f32, DType::f16}) {
          const int symbols = t == worst ? 2 : pk == PartitionKind::zigzag ? 16 : 5;
          out.push_back(long_case(pk, causal, symbols, t, {tiles, VectorIsa::native}));
        }
    }
  for (const CpuVariant& v : all_cpu_variants())
    out.push_back(long_case(PartitionKind::zigzag, false, 2, DType::f32, v));
  return out;
}

class LowEntropyRing : public testing::TestWithParam<LowEntropyRingCase> {};

TEST_P(LowEntropyRing, WithinFp32BoundOfFloat64) {
  const LowEntropyRingCase& c = GetParam();
  // Every rank skips together, or none does (ranks could sit on different CPUs).
  const std::string why = cannot_run(c.variant);
  if (!on_every_rank(why.empty())) GTEST_SKIP() << (why.empty() ? "another rank: " : "") << why;
  const LowEntropyRingProblem pr(c, 17);
  const RingOut got = run_ring(pr, c.variant);
  AttnParams shape;
  shape.head_dim = c.d;
  shape.cpu = c.variant;
  expect_within_bound(pr, got,
                      std::to_string(world_size()) + " ranks, " + kernel_implementation(shape));
}

INSTANTIATE_TEST_SUITE_P(Ring, LowEntropyRing, testing::ValuesIn(low_entropy_ring_cases()),
                         [](const testing::TestParamInfo<LowEntropyRingCase>& i) {
                           return i.param.name();
                         });

}  // namespace
}  // namespace ringattn::test
