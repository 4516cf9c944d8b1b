// Packed sequences (README, "Packed sequences"): S documents laid end to
// end in one token axis, cu_seqlens[s] .. cu_seqlens[s+1] - 1 being document
// s; a query sees only keys of its own document, at positions local to it
// (top-left aligned, as a dense block).
//
// The kernel and the ring know only global positions and one window rule
// (visibility.hpp). Documents turn the packed case into that: each document
// gets its own run of *mask coordinates*, document s's token t at
// base[s] + t - cu[s], with gaps wider than the longest distance inside any
// document, and the window is capped at that distance (window()). Inside a
// document coordinates differ as local positions do, so causal and window
// rules hold unchanged; across documents every pair lies beyond the capped
// window, so tile classes, masks, skipped ring steps and flop counts empty
// them with no code of their own.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/positions.hpp"
#include "core/visibility.hpp"

namespace ringattn {

class Documents {
 public:
  // One document spanning everything: no document masking.
  Documents() = default;
  // S documents: cu_q over the query tokens, cu_k over the key tokens (the
  // same offsets for self-attention), each [S + 1], checked by
  // check_cu_seqlens.
  static Documents packed(std::vector<std::int64_t> cu_q, std::vector<std::int64_t> cu_k);

  bool is_packed() const { return data_ != nullptr; }
  std::int64_t count() const;  // S (1 when not packed)
  const std::vector<std::int64_t>& cu_q() const;
  const std::vector<std::int64_t>& cu_k() const;

  // Mask coordinates of query (key) tokens at the token positions `tokens`:
  // each segment split where it crosses a document. Unchanged when not packed.
  Positions q_coordinates(const Positions& tokens) const;
  Positions k_coordinates(const Positions& tokens) const;
  // The window to mask coordinates with: w with each side capped at the
  // longest distance inside one document. w itself when not packed.
  Window window(Window w) const;
  // Calls f(t, keys) for every query token t, in order, with the number of
  // keys t sees under vis (causal and window, on local positions): its
  // share of the visible work. Walks the documents: no search per token.
  // Packed documents only.
  template <class F>
  void for_each_visible_keys(const Visibility& vis, F&& f) const;
  // Document holding query token t (0 <= t < cu_q().back()).
  std::int64_t document_of_query(std::int64_t t) const;

  friend bool operator==(const Documents& a, const Documents& b);

 private:
  struct Data {
    std::vector<std::int64_t> cu_q, cu_k;
    std::vector<std::int64_t> base;  // [S]: first coordinate of each document
    std::int64_t reach = 0;          // longest distance inside one document
  };
  static Positions coordinates(const Positions& tokens, const std::vector<std::int64_t>& cu,
                               const std::vector<std::int64_t>& base);
  std::shared_ptr<const Data> data_;
};

template <class F>
void Documents::for_each_visible_keys(const Visibility& vis, F&& f) const {
  const std::vector<std::int64_t>& q = cu_q();
  const std::vector<std::int64_t>& k = cu_k();
  for (std::size_t s = 0; s + 1 < q.size(); ++s) {
    const std::int64_t nk = k[s + 1] - k[s];  // the keys of document s
    for (std::int64_t t = q[s]; t < q[s + 1]; ++t) {
      const std::int64_t p = t - q[s];  // t's position in its document
      const std::int64_t lo = std::max<std::int64_t>(0, vis.first_key(p));
      const std::int64_t hi = std::min(nk - 1, vis.last_key(p));
      f(t, std::max<std::int64_t>(0, hi - lo + 1));
    }
  }
}

// Packed offsets [S + 1] over `tokens` tokens from a lengths spec, what
// `gen --docs` and `bench ring --docs` take:
//   "a,b,c,..."     those lengths (0 allowed); they must sum to `tokens`
//   "longtail:S"    S lengths from a heavy-tailed (Pareto, alpha 0.7)
//                   distribution, seeded and so the same everywhere, scaled
//                   to sum to `tokens`: a few sequences hold most tokens,
//                   many are tiny (each >= 1 while tokens >= S)
// Throws Error(usage) "<where> ..." otherwise.
std::vector<std::int64_t> packed_offsets(const std::string& spec, std::int64_t tokens,
                                         const std::string& where);
// What --help shows for the spec.
inline constexpr const char* kPackedOffsetsMetavar = "L1,L2,...|longtail:S";

// Checks packed offsets for `tokens` tokens: [S + 1] entries, the first 0,
// non-decreasing, the last `tokens`. Throws Error(usage) "<where>: ..."
// naming the first bad entry and its value.
void check_cu_seqlens(const std::vector<std::int64_t>& cu, std::int64_t tokens,
                      const std::string& where);

}  // namespace ringattn
