// How a sequence of N tokens is split across P ranks, and the map between a
// rank's local rows and global token positions (the positions the kernel
// masks on).
//
//   contiguous  rank r holds one run of consecutive tokens
//   zigzag      2P chunks; rank r holds chunks r and 2P-1-r (equal causal work)
//   striped     token t lives on rank t mod P (equal causal work)
//   balanced    rank r holds one run of consecutive tokens, the runs cut
//               where the visible work (keys each query sees: documents,
//               causal, window) splits evenly (Partition::balanced)
//
// Any N >= P: shard sizes differ by at most one token (contiguous, striped)
// or one token per chunk (zigzag); balanced ones by what the work asks. N < P is an error: a rank
// with no tokens has nothing to send around the ring.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <vector>

#include "core/documents.hpp"
#include "core/positions.hpp"
#include "core/visibility.hpp"

namespace ringattn {

enum class PartitionKind { contiguous, zigzag, striped, balanced };

const char* partition_name(PartitionKind k);
// "contiguous" | "zigzag" | "striped" | "balanced"; throws Error(usage) otherwise.
PartitionKind parse_partition(std::string_view s);
// balanced for packed documents; else zigzag when causal (balances the
// causal triangle), contiguous otherwise.
PartitionKind default_partition(bool causal, bool packed = false);

class Partition {
 public:
  // contiguous, zigzag or striped (balanced needs the work: below).
  Partition(PartitionKind kind, std::int64_t n, int ranks);
  // Contiguous runs of the query tokens of docs (packed; a dense problem is
  // one document) cut where the keys their queries see under vis split
  // evenly over the ranks; every rank keeps at least one token.
  static Partition balanced(const Documents& docs, const Visibility& vis, int ranks);
  // Any kind: balanced from docs and vis, the others from docs' token count
  // (n when not packed).
  static Partition of(PartitionKind kind, std::int64_t n, int ranks, const Documents& docs,
                      const Visibility& vis);

  PartitionKind kind() const { return kind_; }
  std::int64_t tokens() const { return n_; }
  int ranks() const { return p_; }

  // Tokens on rank r.
  std::int64_t local_size(int r) const;
  // The largest local_size over ranks (ring buffer capacity).
  std::int64_t max_local_size() const;
  // Global positions of rank r's rows, as strided segments (1 for contiguous
  // and striped, 2 for zigzag).
  Positions positions(int r) const;
  // Global position of local row i on rank r.
  std::int64_t global_position(int r, std::int64_t i) const;
  // (rank, local row) holding global token t.
  std::pair<int, std::int64_t> owner(std::int64_t t) const;

  friend bool operator==(const Partition&, const Partition&) = default;

 private:
  // First token and size of zigzag chunk c (0 <= c < 2P) or contiguous run r.
  std::int64_t run_first(std::int64_t c, std::int64_t runs) const;
  std::int64_t run_size(std::int64_t c, std::int64_t runs) const;

  PartitionKind kind_;
  std::int64_t n_;
  int p_;
  std::vector<std::int64_t> bounds_;  // balanced: rank r holds [bounds_[r], bounds_[r + 1])
};

// A ring's partitions of the query and key tokens. Balanced queries are cut
// by the visible work of docs under vis; the keys of self-attention follow
// the queries' cuts, cross-attention's keys lie contiguous.
struct RingPartitions {
  PartitionKind kind;
  Partition q, kv;
};
RingPartitions ring_partitions(PartitionKind kind, std::int64_t n_q, std::int64_t n_kv, int ranks,
                               const Documents& docs, const Visibility& vis);

}  // namespace ringattn
