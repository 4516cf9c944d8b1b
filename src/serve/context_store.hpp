// The resident key/value contexts of the service, one shard per rank.
//
// A context's tokens are dealt to the ranks in pages: global token t lies in
// page g = t / page, owned by rank g % P, at local row (g / P) * page + t %
// page. Pages (not one contiguous span per rank) keep appends balanced: a
// decoding client's new tokens go to every rank in turn, not all to the last.
// Each rank keeps its rows in global order, K and V as [H_kv][capacity][D]
// in the context's storage type (f32 or f16, as loaded), capacity doubling
// as tokens arrive, and the rows' global positions as one segment per page
// (what the kernel's causal rule and windows read).
//
// Every rank holds the same metadata (name, tokens, heads, dim, type), so
// rank 0 checks requests against its own copy before any rank is involved.
//
// Includes: core/aligned_buffer.hpp, core/dtype.hpp, core/positions.hpp.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/aligned_buffer.hpp"
#include "core/dtype.hpp"
#include "core/positions.hpp"

namespace ringattn::serve {

// How a context's tokens are dealt to ranks (see above).
struct PageMap {
  std::int64_t page = 2048;  // tokens per page
  int ranks = 1;
  int owner(std::int64_t t) const { return static_cast<int>((t / page) % ranks); }
  std::int64_t local_row(std::int64_t t) const { return (t / page / ranks) * page + t % page; }
  // Rows rank r holds of a context of `tokens` tokens.
  std::int64_t rows_of(int r, std::int64_t tokens) const;
};

struct ContextInfo {
  std::string name;
  DType dtype = DType::f32;  // f32 or f16
  std::int64_t heads_kv = 0, head_dim = 0, tokens = 0;
};

class ContextShard {
 public:
  ContextShard(ContextInfo info, PageMap map, int rank);
  const ContextInfo& info() const { return info_; }
  // Rows this rank holds, and their global positions.
  std::int64_t rows() const { return rows_; }
  const Positions& positions() const { return pos_; }
  // K or V of kv head h: rows() rows of head_dim elements, row stride head_dim.
  const void* k_head(std::int64_t h) const { return k_.data() + h * head_bytes(); }
  const void* v_head(std::int64_t h) const { return v_.data() + h * head_bytes(); }
  std::int64_t head_stride_elements() const { return capacity_ * info_.head_dim; }
  // Adds tokens [info.tokens, info.tokens + t) given as K, V [H_kv][t][D] of
  // the context's dtype (only this rank's rows are kept).
  void append(const void* k, const void* v, std::int64_t t);
  // Adds this rank's rows of tokens [first, first + t) when the caller has
  // only those rows: k_rows/v_rows [H_kv][rows][D], rows = this rank's rows
  // of that range (HDF5 loads read only them).
  void append_own_rows(const void* k_rows, const void* v_rows, std::int64_t t);
  // This rank's rows of tokens [first, first + t) in order: (first token of
  // each run, run length), for readers that fetch only them.
  std::vector<std::pair<std::int64_t, std::int64_t>> own_runs(std::int64_t first,
                                                              std::int64_t t) const;
  std::size_t bytes() const { return k_.size() + v_.size(); }

 private:
  std::size_t row_bytes() const {
    return static_cast<std::size_t>(info_.head_dim) * dtype_size(info_.dtype);
  }
  std::size_t head_bytes() const { return static_cast<std::size_t>(capacity_) * row_bytes(); }
  void reserve(std::int64_t rows);
  void note_rows(std::int64_t first_token, std::int64_t t);

  ContextInfo info_;
  PageMap map_;
  int rank_ = 0;
  std::int64_t rows_ = 0, capacity_ = 0;
  AlignedBuffer<unsigned char> k_, v_;
  Positions pos_;
};

// Every context on this rank, by name.
class ContextStore {
 public:
  explicit ContextStore(PageMap map, int rank) : map_(map), rank_(rank) {}
  const PageMap& map() const { return map_; }
  ContextShard* find(const std::string& name);
  ContextShard& create(const ContextInfo& info);  // info.tokens must be 0; the name must be new
  void drop(const std::string& name);
  const std::map<std::string, ContextShard>& all() const { return contexts_; }

 private:
  PageMap map_;
  int rank_ = 0;
  std::map<std::string, ContextShard> contexts_;
};

}  // namespace ringattn::serve
