// Which keys a query sees, decided on global token positions (DESIGN.md):
// key j is visible to query i when i - left <= j <= i + right. A Window is
// what a user asks for (--window L[,R]); causal caps its right side at 0.
// One rule for the kernel's masks and tile classes, the ring's skipped
// steps, the float64 reference and the flop count.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace ringattn {

inline constexpr std::int64_t kUnboundedWindow = std::numeric_limits<std::int64_t>::max();

// The attention window as configured; both sides unbounded by default.
struct Window {
  std::int64_t left = kUnboundedWindow;   // keys up to `left` positions before the query
  std::int64_t right = kUnboundedWindow;  // keys up to `right` positions after it

  bool bounded() const { return left != kUnboundedWindow || right != kUnboundedWindow; }
  // "none", "L" (right unbounded) or "L,R"; an unbounded side is "inf".
  std::string text() const;
  // Parses text() forms; throws Error(usage) "<where> must be ..." otherwise.
  static Window parse(std::string_view text, const std::string& where);
  // The same without throwing: nullopt for text parse() refuses.
  static std::optional<Window> from_text(std::string_view text);
  // What --help shows for the value.
  static constexpr const char* metavar = "none|L[,R]";

  friend bool operator==(const Window&, const Window&) = default;
};

// The rule a block is computed with: the window, capped by causal masking.
struct Visibility {
  std::int64_t left = kUnboundedWindow;
  std::int64_t right = kUnboundedWindow;

  static constexpr Visibility of(bool causal, Window w = {}) {
    return {w.left, causal && w.right > 0 ? 0 : w.right};
  }
  // Everything visible: no mask at all.
  constexpr bool all() const { return left == kUnboundedWindow && right == kUnboundedWindow; }
  // Positions stay far below 2^62, so the differences cannot overflow.
  constexpr bool sees(std::int64_t q, std::int64_t k) const {
    return k - q <= right && q - k <= left;
  }
  // The first and last key position query q sees (saturated at the int64 range).
  constexpr std::int64_t first_key(std::int64_t q) const {
    return left == kUnboundedWindow ? std::numeric_limits<std::int64_t>::min() : q - left;
  }
  constexpr std::int64_t last_key(std::int64_t q) const {
    return right == kUnboundedWindow ? kUnboundedWindow : q + right;
  }
};

}  // namespace ringattn
