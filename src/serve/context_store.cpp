// ContextShard, ContextStore (see context_store.hpp).
#include "serve/context_store.hpp"

#include <algorithm>
#include <cstring>

#include "core/error.hpp"

namespace ringattn::serve {

std::int64_t PageMap::rows_of(int r, std::int64_t tokens) const {
  const std::int64_t full_pages = tokens / page, tail = tokens % page;
  // Pages r, r + P, ... below full_pages are whole; page full_pages holds the tail.
  const std::int64_t whole = full_pages > r ? (full_pages - r + ranks - 1) / ranks : 0;
  return whole * page + (tail > 0 && owner(full_pages * page) == r ? tail : 0);
}

ContextShard::ContextShard(ContextInfo info, PageMap map, int rank)
    : info_(std::move(info)), map_(map), rank_(rank) {
  RA_CHECK(info_.tokens == 0, internal, "a new context starts empty");
}

void ContextShard::reserve(std::int64_t rows) {
  if (rows <= capacity_) return;
  const std::int64_t cap = std::max<std::int64_t>({rows, 2 * capacity_, 256});
  const std::size_t old_head = head_bytes(), used = static_cast<std::size_t>(rows_) * row_bytes();
  const std::size_t new_head = static_cast<std::size_t>(cap) * row_bytes();
  const std::size_t total = new_head * static_cast<std::size_t>(info_.heads_kv);
  AlignedBuffer<unsigned char> k(total), v(total);
  for (std::int64_t h = 0; h < info_.heads_kv; ++h) {
    if (used == 0) break;
    std::memcpy(k.data() + h * new_head, k_.data() + h * old_head, used);
    std::memcpy(v.data() + h * new_head, v_.data() + h * old_head, used);
  }
  k_ = std::move(k);
  v_ = std::move(v);
  capacity_ = cap;
}

std::vector<std::pair<std::int64_t, std::int64_t>> ContextShard::own_runs(std::int64_t first,
                                                                          std::int64_t t) const {
  std::vector<std::pair<std::int64_t, std::int64_t>> runs;
  for (std::int64_t x = first; x < first + t;) {
    const std::int64_t page_end = std::min(first + t, (x / map_.page + 1) * map_.page);
    if (map_.owner(x) == rank_) runs.emplace_back(x, page_end - x);
    x = page_end;
  }
  return runs;
}

void ContextShard::note_rows(std::int64_t first_token, std::int64_t t) {
  // Extend the last page's segment when it continues it, else start one.
  for (auto [x, n] : own_runs(first_token, t)) {
    const auto& segs = pos_.segments();
    if (!segs.empty() && segs.back().first + segs.back().count == x) {
      Positions p;
      for (std::size_t i = 0; i + 1 < segs.size(); ++i) p.append(segs[i]);
      p.append({segs.back().first, 1, segs.back().count + n});
      pos_ = std::move(p);
    } else {
      pos_.append({x, 1, n});
    }
  }
  info_.tokens = first_token + t;
}

void ContextShard::append(const void* k, const void* v, std::int64_t t) {
  const std::int64_t first = info_.tokens;
  const auto runs = own_runs(first, t);
  std::int64_t mine = 0;
  for (auto [x, n] : runs) mine += n;
  reserve(rows_ + mine);
  const std::size_t rb = row_bytes();
  const auto* ks = static_cast<const unsigned char*>(k);
  const auto* vs = static_cast<const unsigned char*>(v);
  for (std::int64_t h = 0; h < info_.heads_kv; ++h) {
    std::int64_t row = rows_;
    for (auto [x, n] : runs) {
      const std::size_t src = (static_cast<std::size_t>(h * t + (x - first))) * rb;
      const std::size_t dst = h * head_bytes() + static_cast<std::size_t>(row) * rb;
      std::memcpy(k_.data() + dst, ks + src, static_cast<std::size_t>(n) * rb);
      std::memcpy(v_.data() + dst, vs + src, static_cast<std::size_t>(n) * rb);
      row += n;
    }
  }
  rows_ += mine;
  note_rows(first, t);
}

void ContextShard::append_own_rows(const void* k_rows, const void* v_rows, std::int64_t t) {
  const std::int64_t first = info_.tokens;
  std::int64_t mine = 0;
  for (auto [x, n] : own_runs(first, t)) mine += n;
  reserve(rows_ + mine);
  const std::size_t rb = row_bytes(), n_bytes = static_cast<std::size_t>(mine) * rb;
  for (std::int64_t h = 0; h < info_.heads_kv && mine > 0; ++h) {
    const std::size_t dst = h * head_bytes() + static_cast<std::size_t>(rows_) * rb;
    std::memcpy(k_.data() + dst, static_cast<const unsigned char*>(k_rows) + h * n_bytes, n_bytes);
    std::memcpy(v_.data() + dst, static_cast<const unsigned char*>(v_rows) + h * n_bytes, n_bytes);
  }
  rows_ += mine;
  note_rows(first, t);
}

ContextShard* ContextStore::find(const std::string& name) {
  auto it = contexts_.find(name);
  return it == contexts_.end() ? nullptr : &it->second;
}

ContextShard& ContextStore::create(const ContextInfo& info) {
  RA_CHECK(!contexts_.count(info.name), usage, "context '", info.name, "' exists already");
  return contexts_.emplace(info.name, ContextShard(info, map_, rank_)).first->second;
}

void ContextStore::drop(const std::string& name) {
  RA_CHECK(contexts_.erase(name) == 1, usage, "no context '", name, "'");
}

}  // namespace ringattn::serve
