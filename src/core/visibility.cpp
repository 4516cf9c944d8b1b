// Window's text form (see visibility.hpp).
#include "core/visibility.hpp"

#include <charconv>

#include "core/error.hpp"

namespace ringattn {
namespace {

std::string side_text(std::int64_t v) {
  return v == kUnboundedWindow ? "inf" : std::to_string(v);
}

// One side: a count of positions >= 0 (at most 2^62), or "inf".
bool parse_side(std::string_view t, std::int64_t& out) {
  if (t == "inf") {
    out = kUnboundedWindow;
    return true;
  }
  if (t.empty()) return false;
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (ec != std::errc() || end != t.data() + t.size() || v < 0 || v > (std::int64_t{1} << 62))
    return false;
  out = v;
  return true;
}

}  // namespace

std::string Window::text() const {
  if (!bounded()) return "none";
  if (right == kUnboundedWindow) return side_text(left);
  return side_text(left) + "," + side_text(right);
}

std::optional<Window> Window::from_text(std::string_view text) {
  Window w;
  if (text == "none") return w;
  const std::size_t comma = text.find(',');
  const bool ok = comma == std::string_view::npos ? parse_side(text, w.left)
                                                  : parse_side(text.substr(0, comma), w.left) &&
                                                        parse_side(text.substr(comma + 1), w.right);
  if (!ok) return std::nullopt;
  return w;
}

Window Window::parse(std::string_view text, const std::string& where) {
  const std::optional<Window> w = from_text(text);
  RA_CHECK(w, usage, where,
           " must be \"none\", L or L,R (keys L positions before to R after the query; each a "
           "whole number from 0 to 2^62, or inf), got \"",
           std::string(text), "\"");
  return *w;
}

}  // namespace ringattn
