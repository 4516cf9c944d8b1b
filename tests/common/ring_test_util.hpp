// What the ring tests (CPU ring, device ring) share: a case of the sweep, the
// problem every rank rebuilds from seeds (the whole Q, K, V, this rank's
// shards of them and its rows of the float64 answer, STYLE 10), one run of
// any Ring over it (through its home block, as the job does), and checks
// that name the rank and the worst element when they fail.
//
//   common/mpi_test_util.hpp  world_rank, world_size
//   kernel/reference.hpp      reference_attention and compare_to_reference
//   ring/ring.hpp             Ring, RingLayout, RingOptions, RingStats
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/documents.hpp"
#include "core/dtype.hpp"
#include "core/positions.hpp"
#include "core/seeded_data.hpp"
#include "kernel/params.hpp"
#include "kernel/reference.hpp"
#include "ring/kv_block.hpp"
#include "ring/partition.hpp"
#include "ring/ring.hpp"

#include "mpi_test_util.hpp"

namespace ringattn::test {

// Rows of a dense (B, H, N, D) tensor at the given global positions, in that
// order: (B, H, positions.size(), D).
inline std::vector<char> gather_rows(const std::vector<char>& full, DType t, std::int64_t B,
                                     std::int64_t H, std::int64_t N, std::int64_t D,
                                     const Positions& pos) {
  const std::size_t es = dtype_size(t), row = static_cast<std::size_t>(D) * es;
  const std::int64_t n = pos.size();
  std::vector<char> out(static_cast<std::size_t>(B * H * n) * row);
  for (std::int64_t bh = 0; bh < B * H; ++bh)
    for (std::int64_t i = 0; i < n; ++i)
      std::memcpy(out.data() + static_cast<std::size_t>(bh * n + i) * row,
                  full.data() + static_cast<std::size_t>(bh * N + pos[i]) * row, row);
  return out;
}

struct RingCase {
  PartitionKind partition;
  bool causal;
  std::int64_t hq, hkv, nq, nkv, d;
  DType dtype;
  Window window = {};  // default: none
  // Packed sequences (packed_offsets spec, over nq and nkv tokens): batch 1,
  // checked against each document's own float64 answer. "": dense.
  std::string docs = {};
  std::string name() const {
    std::string w = window.bounded() ? "_window" + window.text() : "";
    if (!docs.empty()) w += "_docs" + docs;
    std::replace_if(
        w.begin(), w.end(), [](char ch) { return ch == ',' || ch == ':'; }, '_');
    return std::string(partition_name(partition)) + (causal ? "_causal" : "_full") + "_h" +
           std::to_string(hq) + "x" + std::to_string(hkv) + "_n" + std::to_string(nq) + "x" +
           std::to_string(nkv) + "_d" + std::to_string(d) + "_" + dtype_name(dtype) + w;
  }
};

// One problem of batch 2 partitioned over MPI_COMM_WORLD: the whole Q, K, V
// (seeds seed, seed + 1, seed + 2), this rank's shards, and this rank's rows
// of the float64 answer.
struct RingProblem {
  RingCase c;
  std::int64_t B = 2, nloc = 0;
  Partition qp, kp;
  std::vector<char> q, k, v;     // the whole sequence
  std::vector<char> qs, ks, vs;  // this rank's rows of it
  std::vector<double> ref, ref_lse;

  Documents docs;  // packed cases' documents
  RingLayout layout() const { return {qp, kp, {c.dtype, B, c.hkv, c.d}, c.hq, docs}; }
  // The whole sequence as one kernel problem.
  AttnParams whole() const {
    AttnParams p =
        AttnParams::dense(q.data(), k.data(), v.data(), c.dtype, B, c.hq, c.hkv, c.nq, c.nkv, c.d);
    p.causal = c.causal;
    p.window = docs.window(c.window);  // packed: on the documents' coordinates
    if (docs.is_packed()) {
      p.q_pos = docs.q_coordinates(Positions::contiguous(0, c.nq));
      p.k_pos = docs.k_coordinates(Positions::contiguous(0, c.nkv));
    }
    return p;
  }
  // This rank's rows of a whole-sequence answer (B, HQ, NQ, width).
  template <typename T>
  std::vector<T> mine(const std::vector<T>& all, std::int64_t width) const {
    const Positions pos = qp.positions(world_rank());
    std::vector<T> out(static_cast<std::size_t>(B * c.hq * nloc * width));
    for (std::int64_t bh = 0; bh < B * c.hq; ++bh)
      for (std::int64_t i = 0; i < nloc; ++i) {
        const std::int64_t g = bh * c.nq + pos[i], l = bh * nloc + i;
        for (std::int64_t d = 0; d < width; ++d) out[l * width + d] = all[g * width + d];
      }
    return out;
  }

  // The float64 answer of a packed case, document by document: each one a
  // dense problem of its own rows and keys at local positions, so the
  // documents' coordinates are checked, not used.
  void reference_by_document(std::vector<double>& o, std::vector<double>& lse) const {
    const std::size_t es = dtype_size(c.dtype);
    const std::vector<std::int64_t>&cq = docs.cu_q(), &ck = docs.cu_k();
    for (std::size_t s = 0; s + 1 < cq.size(); ++s) {
      const std::int64_t q0 = cq[s], nq = cq[s + 1] - q0, k0 = ck[s], nk = ck[s + 1] - k0;
      if (nq == 0) continue;
      std::vector<double> po(static_cast<std::size_t>(c.hq * nq * c.d), 0.0),
          pl(static_cast<std::size_t>(c.hq * nq), -std::numeric_limits<double>::infinity());
      if (nk > 0) {
        AttnParams p;
        p.q = {q.data() + static_cast<std::size_t>(q0 * c.d) * es, 0, c.nq * c.d, c.d};
        p.k = {k.data() + static_cast<std::size_t>(k0 * c.d) * es, 0, c.nkv * c.d, c.d};
        p.v = {v.data() + static_cast<std::size_t>(k0 * c.d) * es, 0, c.nkv * c.d, c.d};
        p.dtype = c.dtype;
        p.heads_q = c.hq;
        p.heads_kv = c.hkv;
        p.n_q = nq;
        p.n_kv = nk;
        p.head_dim = c.d;
        p.causal = c.causal;
        p.window = c.window;
        reference_attention(p, po.data(), pl.data());
      }
      for (std::int64_t h = 0; h < c.hq; ++h)
        for (std::int64_t i = 0; i < nq; ++i) {
          const std::int64_t g = h * c.nq + q0 + i, l = h * nq + i;
          lse[g] = pl[l];
          for (std::int64_t d = 0; d < c.d; ++d) o[g * c.d + d] = po[l * c.d + d];
        }
    }
  }

  static Documents documents_of(const RingCase& cs) {
    if (cs.docs.empty()) return {};
    return Documents::packed(packed_offsets(cs.docs, cs.nq, "case"),
                             packed_offsets(cs.docs, cs.nkv, "case"));
  }
  static RingPartitions partitions_of(const RingCase& cs) {
    return ring_partitions(cs.partition, cs.nq, cs.nkv, world_size(), documents_of(cs),
                           Visibility::of(cs.causal, cs.window));
  }

  RingProblem(const RingCase& cs, std::uint64_t seed)
      : c(cs),
        B(cs.docs.empty() ? 2 : 1),
        qp(partitions_of(cs).q),
        kp(partitions_of(cs).kv),
        docs(documents_of(cs)) {
    const int r = world_rank();
    const std::size_t es = dtype_size(c.dtype);
    q.resize(static_cast<std::size_t>(B * c.hq * c.nq * c.d) * es);
    k.resize(static_cast<std::size_t>(B * c.hkv * c.nkv * c.d) * es);
    v.resize(k.size());
    fill_seeded(q.data(), c.dtype, q.size() / es, seed, 0, 2.0f);
    fill_seeded(k.data(), c.dtype, k.size() / es, seed + 1, 0, 2.0f);
    fill_seeded(v.data(), c.dtype, v.size() / es, seed + 2);
    qs = gather_rows(q, c.dtype, B, c.hq, c.nq, c.d, qp.positions(r));
    ks = gather_rows(k, c.dtype, B, c.hkv, c.nkv, c.d, kp.positions(r));
    vs = gather_rows(v, c.dtype, B, c.hkv, c.nkv, c.d, kp.positions(r));
    nloc = qp.local_size(r);

    std::vector<double> full(static_cast<std::size_t>(B * c.hq * c.nq * c.d)),
        full_lse(static_cast<std::size_t>(B * c.hq * c.nq));
    if (docs.is_packed())
      reference_by_document(full, full_lse);
    else
      reference_attention(whole(), full.data(), full_lse.data());
    ref = mine(full, c.d);
    ref_lse = mine(full_lse, 1);
  }
};

// This rank's answer from one run of a ring.
struct RingAnswer {
  std::vector<float> o, lse;  // lse empty when not asked for
  RingStats stats;
};

// Runs ring over pr: this rank's K and V into the home block at the offsets
// KvBlock states, then once round; o from ring.output().
inline RingAnswer run_ring_on(Ring& ring, const RingProblem& pr, const RingOptions& opt,
                              bool with_lse = true) {
  const RingLayout layout = pr.layout();
  const KvBlockRef home = ring.home_block(layout);
  EXPECT_EQ(home.layout.bytes(), pr.ks.size() + pr.vs.size()) << "the home block's size";
  std::memcpy(home.k(), pr.ks.data(), pr.ks.size());
  std::memcpy(home.v(), pr.vs.data(), pr.vs.size());
  RingAnswer a;
  a.lse.assign(with_lse ? pr.ref_lse.size() : 0, -7.0f);  // every element must be written
  a.stats = ring.run(layout, pr.qs.data(), with_lse ? a.lse.data() : nullptr, opt);
  a.o.assign(ring.output(), ring.output() + pr.ref.size());
  return a;
}

// This rank's o and lse against the float64 answer: o within tol of the
// output's scale, lse within tol of max(1, its scale).
inline void expect_matches_float64(const RingProblem& pr, const std::vector<float>& o,
                                   const std::vector<float>& lse, double tol) {
  const int r = world_rank();
  const Comparison co = compare_to_reference(o.data(), pr.ref.data(), std::ssize(o));
  EXPECT_LE(co.rel_err, tol) << "rank " << r << " worst o[" << co.worst << "] = " << co.worst_value
                             << ", float64 " << co.worst_ref;
  const Comparison cl = compare_to_reference(lse.data(), pr.ref_lse.data(), std::ssize(lse));
  EXPECT_LE(cl.max_abs_err, tol * std::max(1.0, cl.scale))
      << "rank " << r << " worst lse[" << cl.worst << "] = " << cl.worst_value << ", float64 "
      << cl.worst_ref;
}

// o against another answer's o (as f64 for the comparison helper), within tol
// of its scale; `what` names the two ("ring vs one rank").
inline void expect_same_o(const std::vector<float>& o, const std::vector<float>& other, double tol,
                          const char* what) {
  const std::vector<double> other_d(other.begin(), other.end());
  const Comparison c = compare_to_reference(o.data(), other_d.data(), std::ssize(o));
  EXPECT_LE(c.rel_err, tol) << "rank " << world_rank() << " " << what << ", worst o[" << c.worst
                            << "] = " << c.worst_value << " vs " << c.worst_ref;
}

}  // namespace ringattn::test
