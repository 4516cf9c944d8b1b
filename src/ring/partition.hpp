// How a sequence of N tokens is split across P ranks, and the map between a
// rank's local rows and global token positions (the positions the kernel
// masks on).
//
//   contiguous  rank r holds one run of consecutive tokens
//   zigzag      2P chunks; rank r holds chunks r and 2P-1-r (equal causal work)
//   striped     token t lives on rank t mod P (equal causal work)
//
// Any N >= P: shard sizes differ by at most one token (contiguous, striped)
// or one token per chunk (zigzag). N < P is an error: a rank with no tokens
// has nothing to send around the ring.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/positions.hpp"

namespace ringattn {

enum class PartitionKind { contiguous, zigzag, striped };

const char* partition_name(PartitionKind k);
// "contiguous" | "zigzag" | "striped"; throws Error(usage) otherwise.
PartitionKind parse_partition(std::string_view s);
// zigzag when causal (balances the causal triangle), contiguous otherwise.
PartitionKind default_partition(bool causal);

class Partition {
 public:
  Partition(PartitionKind kind, std::int64_t n, int ranks);

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
};

}  // namespace ringattn
