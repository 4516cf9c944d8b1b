// Packed documents as mask coordinates (see documents.hpp).
#include "core/documents.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <numeric>

#include "core/checked.hpp"
#include "core/error.hpp"
#include "core/seeded_data.hpp"

namespace ringattn {

void check_cu_seqlens(const std::vector<std::int64_t>& cu, std::int64_t tokens,
                      const std::string& where) {
  RA_CHECK(cu.size() >= 2, usage, where,
           ": needs at least 2 entries (S + 1 for S >= 1 sequences), has ", cu.size());
  RA_CHECK(cu.front() == 0, usage, where, ": entry [0] is ", cu.front(),
           "; the first entry must be 0");
  for (std::size_t i = 1; i < cu.size(); ++i)
    RA_CHECK(cu[i] >= cu[i - 1], usage, where, ": entry [", i, "] is ", cu[i],
             ", less than entry [", i - 1, "] = ", cu[i - 1], "; the offsets must not decrease");
  RA_CHECK(cu.back() == tokens, usage, where, ": entry [", cu.size() - 1, "] (the last) is ",
           cu.back(), "; it must be the token count, ", tokens);
}

namespace {

std::int64_t parse_count(std::string_view text, const std::string& where) {
  std::int64_t v = -1;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  RA_CHECK(ec == std::errc() && end == text.data() + text.size() && v >= 0, usage, where, ": '",
           text, "' is not a count (an integer >= 0)");
  return v;
}

}  // namespace

std::vector<std::int64_t> packed_offsets(const std::string& spec, std::int64_t tokens,
                                         const std::string& where) {
  std::vector<std::int64_t> lengths;
  const std::string_view sv(spec);
  if (sv.rfind("longtail:", 0) == 0) {
    const std::int64_t S = parse_count(sv.substr(9), where);
    RA_CHECK(S >= 1, usage, where, ": longtail:S needs S >= 1 sequences");
    RA_CHECK(S <= (std::int64_t{1} << 26), usage, where, ": longtail:", S,
             " is too many sequences");
    // Pareto weights u^(-1/alpha); tokens shared by weight, each sequence
    // keeping one token first when there are enough.
    std::vector<double> w(static_cast<std::size_t>(S));
    for (std::int64_t s = 0; s < S; ++s) {
      const double u =
          0.5 * (1.0 + static_cast<double>(seeded_uniform(0x5eed, static_cast<std::uint64_t>(s))));
      w[s] = std::pow(std::max(u, 1e-9), -1.0 / 0.7);
    }
    const std::int64_t floor_each = tokens >= S ? 1 : 0;
    const std::int64_t rest = tokens - floor_each * S;
    const double total = std::accumulate(w.begin(), w.end(), 0.0);
    lengths.resize(static_cast<std::size_t>(S));
    std::int64_t given = 0;
    for (std::int64_t s = 0; s < S; ++s) {
      lengths[s] = floor_each +
                   static_cast<std::int64_t>(std::floor(w[s] / total * static_cast<double>(rest)));
      given += lengths[s];
    }
    // The rounding's remainder, one token each from the first sequence on.
    for (std::int64_t s = 0; given < tokens; s = (s + 1) % S, ++given) ++lengths[s];
  } else {
    std::size_t at = 0;
    while (at <= sv.size()) {
      const std::size_t comma = std::min(sv.find(',', at), sv.size());
      lengths.push_back(parse_count(sv.substr(at, comma - at), where));
      at = comma + 1;
    }
    const std::int64_t sum = std::accumulate(lengths.begin(), lengths.end(), std::int64_t{0});
    RA_CHECK(sum == tokens, usage, where, ": the lengths sum to ", sum, " tokens, not the ", tokens,
             " of the sequence axis");
  }
  std::vector<std::int64_t> cu(lengths.size() + 1, 0);
  std::partial_sum(lengths.begin(), lengths.end(), cu.begin() + 1);
  return cu;
}

Documents Documents::packed(std::vector<std::int64_t> cu_q, std::vector<std::int64_t> cu_k) {
  check_cu_seqlens(cu_q, cu_q.empty() ? 0 : cu_q.back(), "cu_seqlens_q");
  check_cu_seqlens(cu_k, cu_k.empty() ? 0 : cu_k.back(), "cu_seqlens_k");
  RA_CHECK(cu_q.size() == cu_k.size(), usage, "cu_seqlens_q holds ", cu_q.size() - 1,
           " sequences and cu_seqlens_k ", cu_k.size() - 1, ": they must hold the same");
  auto d = std::make_shared<Data>();
  const std::size_t S = cu_q.size() - 1;
  std::int64_t longest = 1;
  for (std::size_t s = 0; s < S; ++s)
    longest = std::max({longest, cu_q[s + 1] - cu_q[s], cu_k[s + 1] - cu_k[s]});
  d->reach = longest - 1;
  d->base.resize(S);
  Checked c;
  std::int64_t next = 0;
  for (std::size_t s = 0; s < S; ++s) {
    d->base[s] = next;
    const std::int64_t extent = std::max(cu_q[s + 1] - cu_q[s], cu_k[s + 1] - cu_k[s]);
    // The gap after a document is wider than reach: no pair across it is visible.
    next = c.add({next, extent, d->reach, 1});
  }
  RA_CHECK(!c.overflow && next < (std::int64_t{1} << 61), usage, "packed sequences of ", S,
           " documents (longest ", longest, " tokens) are too many and too long to address");
  d->cu_q = std::move(cu_q);
  d->cu_k = std::move(cu_k);
  Documents out;
  out.data_ = std::move(d);
  return out;
}

std::int64_t Documents::count() const {
  return data_ ? static_cast<std::int64_t>(data_->cu_q.size()) - 1 : 1;
}

const std::vector<std::int64_t>& Documents::cu_q() const {
  RA_CHECK(data_, internal, "cu_seqlens of unpacked documents");
  return data_->cu_q;
}

const std::vector<std::int64_t>& Documents::cu_k() const {
  RA_CHECK(data_, internal, "cu_seqlens of unpacked documents");
  return data_->cu_k;
}

Positions Documents::coordinates(const Positions& tokens, const std::vector<std::int64_t>& cu,
                                 const std::vector<std::int64_t>& base) {
  Positions out;
  for (const PositionSegment& seg : tokens.segments()) {
    std::int64_t i = 0;
    while (i < seg.count) {
      const std::int64_t t = seg.first + i * seg.stride;
      RA_CHECK(t >= 0 && t < cu.back(), internal, "token ", t, " outside the packed 0..",
               cu.back() - 1);
      // The document holding t: the last offset <= t (empty documents before it skipped).
      const auto s =
          static_cast<std::size_t>(std::upper_bound(cu.begin(), cu.end(), t) - cu.begin() - 1);
      const std::int64_t end = cu[s + 1];  // tokens of s end here
      const std::int64_t n = std::min(seg.count - i, (end - t + seg.stride - 1) / seg.stride);
      out.append({base[s] + (t - cu[s]), seg.stride, n});
      i += n;
    }
  }
  return out;
}

Positions Documents::q_coordinates(const Positions& tokens) const {
  return data_ ? coordinates(tokens, data_->cu_q, data_->base) : tokens;
}

Positions Documents::k_coordinates(const Positions& tokens) const {
  return data_ ? coordinates(tokens, data_->cu_k, data_->base) : tokens;
}

Window Documents::window(Window w) const {
  if (!data_) return w;
  return {std::min(w.left, data_->reach), std::min(w.right, data_->reach)};
}

std::int64_t Documents::document_of_query(std::int64_t t) const {
  if (!data_) return 0;
  const auto& cu = data_->cu_q;
  RA_CHECK(t >= 0 && t < cu.back(), internal, "token ", t, " outside the packed 0..",
           cu.back() - 1);
  return std::upper_bound(cu.begin(), cu.end(), t) - cu.begin() - 1;
}

bool operator==(const Documents& a, const Documents& b) {
  if (!a.data_ || !b.data_) return !a.data_ && !b.data_;
  return a.data_->cu_q == b.data_->cu_q && a.data_->cu_k == b.data_->cu_k;
}

}  // namespace ringattn
