// Partitions of a token sequence over ranks (see partition.hpp).
#include "ring/partition.hpp"

#include <algorithm>

#include "core/error.hpp"

namespace ringattn {

const char* partition_name(PartitionKind k) {
  switch (k) {
    case PartitionKind::contiguous:
      return "contiguous";
    case PartitionKind::zigzag:
      return "zigzag";
    case PartitionKind::striped:
      return "striped";
    case PartitionKind::balanced:
      return "balanced";
  }
  return "?";
}

PartitionKind parse_partition(std::string_view s) {
  if (s == "contiguous") return PartitionKind::contiguous;
  if (s == "zigzag") return PartitionKind::zigzag;
  if (s == "striped") return PartitionKind::striped;
  if (s == "balanced") return PartitionKind::balanced;
  RA_CHECK(false, usage, "unknown partition '", s,
           "' (expected contiguous, zigzag, striped or balanced)");
}

PartitionKind default_partition(bool causal, bool packed) {
  if (packed) return PartitionKind::balanced;
  return causal ? PartitionKind::zigzag : PartitionKind::contiguous;
}

Partition::Partition(PartitionKind kind, std::int64_t n, int ranks)
    : kind_(kind), n_(n), p_(ranks) {
  RA_CHECK(ranks >= 1, usage, "rank count must be >= 1, got ", ranks);
  RA_CHECK(n >= ranks, usage, "sequence of ", n, " tokens is shorter than the ", ranks,
           " ranks: every rank needs at least one token");
  RA_CHECK(kind != PartitionKind::balanced, internal,
           "a balanced partition is built from its work (Partition::balanced)");
}

Partition Partition::balanced(const Documents& docs, const Visibility& vis, int ranks) {
  const std::int64_t n = docs.cu_q().back();
  Partition p(PartitionKind::contiguous, n, ranks);
  p.kind_ = PartitionKind::balanced;
  // prefix[t]: the work of tokens [0, t); each token counts one besides its
  // keys, so that runs of queries that see nothing still spread out.
  std::vector<double> prefix(static_cast<std::size_t>(n) + 1, 0.0);
  docs.for_each_visible_keys(vis, [&](std::int64_t t, std::int64_t keys) {
    prefix[t + 1] = prefix[t] + 1.0 + static_cast<double>(keys);
  });
  p.bounds_.assign(static_cast<std::size_t>(ranks) + 1, 0);
  p.bounds_[ranks] = n;
  for (int r = 1; r < ranks; ++r) {
    const double target = prefix[n] * r / ranks;
    // The cut nearest the target, leaving every rank at least one token.
    auto t = static_cast<std::int64_t>(std::lower_bound(prefix.begin(), prefix.end(), target) -
                                       prefix.begin());
    if (t > 0 && target - prefix[t - 1] < prefix[std::min(t, n)] - target) --t;
    p.bounds_[r] = std::clamp(t, p.bounds_[r - 1] + 1, n - (ranks - r));
  }
  return p;
}

Partition Partition::of(PartitionKind kind, std::int64_t n, int ranks, const Documents& docs,
                        const Visibility& vis) {
  if (kind != PartitionKind::balanced) return Partition(kind, n, ranks);
  if (docs.is_packed()) return balanced(docs, vis, ranks);
  return balanced(Documents::packed({0, n}, {0, n}), vis, ranks);
}

// Runs of near-equal size: the first n % runs runs get one extra token.
std::int64_t Partition::run_size(std::int64_t c, std::int64_t runs) const {
  return n_ / runs + (c < n_ % runs ? 1 : 0);
}

std::int64_t Partition::run_first(std::int64_t c, std::int64_t runs) const {
  return c * (n_ / runs) + std::min(c, n_ % runs);
}

std::int64_t Partition::local_size(int r) const {
  RA_CHECK(r >= 0 && r < p_, internal, "rank ", r, " outside 0..", p_ - 1);
  switch (kind_) {
    case PartitionKind::contiguous:
      return run_size(r, p_);
    case PartitionKind::zigzag:
      return run_size(r, 2 * p_) + run_size(2 * p_ - 1 - r, 2 * p_);
    case PartitionKind::striped:
      return (n_ - r + p_ - 1) / p_;
    case PartitionKind::balanced:
      return bounds_[r + 1] - bounds_[r];
  }
  return 0;
}

std::int64_t Partition::max_local_size() const {
  std::int64_t m = 0;
  for (int r = 0; r < p_; ++r) m = std::max(m, local_size(r));
  return m;
}

Positions Partition::positions(int r) const {
  RA_CHECK(r >= 0 && r < p_, internal, "rank ", r, " outside 0..", p_ - 1);
  switch (kind_) {
    case PartitionKind::contiguous:
      return Positions::contiguous(run_first(r, p_), run_size(r, p_));
    case PartitionKind::zigzag: {
      const std::int64_t c2 = 2 * p_ - 1 - r;
      Positions pos;
      pos.append({run_first(r, 2 * p_), 1, run_size(r, 2 * p_)});
      pos.append({run_first(c2, 2 * p_), 1, run_size(c2, 2 * p_)});
      return pos;
    }
    case PartitionKind::striped:
      return Positions::strided(r, p_, local_size(r));
    case PartitionKind::balanced:
      return Positions::contiguous(bounds_[r], local_size(r));
  }
  return {};
}

std::int64_t Partition::global_position(int r, std::int64_t i) const {
  return positions(r)[i];
}

std::pair<int, std::int64_t> Partition::owner(std::int64_t t) const {
  RA_CHECK(t >= 0 && t < n_, internal, "token ", t, " outside 0..", n_ - 1);
  switch (kind_) {
    case PartitionKind::contiguous: {
      // Runs 0..n%P-1 have q+1 tokens, the rest q.
      const std::int64_t q = n_ / p_, extra = n_ % p_, big = extra * (q + 1);
      if (t < big) return {static_cast<int>(t / (q + 1)), t % (q + 1)};
      return {static_cast<int>(extra + (t - big) / q), (t - big) % q};
    }
    case PartitionKind::zigzag: {
      const std::int64_t runs = 2 * p_, q = n_ / runs, extra = n_ % runs, big = extra * (q + 1);
      const std::int64_t c = t < big ? t / (q + 1) : extra + (t - big) / q;
      const std::int64_t in_chunk = t - run_first(c, runs);
      if (c < p_) return {static_cast<int>(c), in_chunk};
      const int r = static_cast<int>(runs - 1 - c);
      return {r, run_size(r, runs) + in_chunk};
    }
    case PartitionKind::striped:
      return {static_cast<int>(t % p_), t / p_};
    case PartitionKind::balanced: {
      const auto r = std::upper_bound(bounds_.begin(), bounds_.end(), t) - bounds_.begin() - 1;
      return {static_cast<int>(r), t - bounds_[r]};
    }
  }
  return {0, 0};
}

RingPartitions ring_partitions(PartitionKind kind, std::int64_t n_q, std::int64_t n_kv, int ranks,
                               const Documents& docs, const Visibility& vis) {
  Partition q = Partition::of(kind, n_q, ranks, docs, vis);
  const bool self = n_q == n_kv && (!docs.is_packed() || docs.cu_q() == docs.cu_k());
  if (kind == PartitionKind::balanced && self) return {kind, q, q};
  const PartitionKind kv_kind = kind == PartitionKind::balanced ? PartitionKind::contiguous : kind;
  return {kind, std::move(q), Partition(kv_kind, n_kv, ranks)};
}

}  // namespace ringattn
