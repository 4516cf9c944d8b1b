// Conversions and checks of setting values (see setting.hpp): the messages
// every edge prints when it refuses a value.
#include "job/setting.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "core/error.hpp"

namespace ringattn {
namespace setting_detail {
namespace {

bool within(double v, const NumberRule& r) {
  return (r.above ? v > r.lo : v >= r.lo) && v <= r.hi;
}

// "0 (1/sqrt(head dim)) or >= 1.17549e-38 and <= 3.40282e+38",
// ">= 0 and <= 1e+09 seconds (0: no timeout)".
std::string rule_text(const NumberRule& r) {
  std::string b;
  if (r.lo > -std::numeric_limits<double>::infinity()) {
    b += r.above ? "> " : ">= ";
    b += short_number(r.lo);
  }
  if (r.hi < std::numeric_limits<double>::infinity()) {
    b += b.empty() ? "<= " : " and <= ";
    b += short_number(r.hi);
  }
  if (r.unit) b += std::string(" ") + r.unit;
  if (!r.zero) return b;
  if (within(0, r)) return b + " (0: " + r.zero + ")";
  return std::string("0 (") + r.zero + ") or " + b;
}

}  // namespace

void refuse(const std::string& where, const std::string& why) {
  RA_CHECK(false, usage, where, " ", why);
}

void check_number(double v, const std::string& where, const NumberRule& rule, double lo,
                  double hi) {
  if (!std::isfinite(v)) refuse(where, "must be a finite number, got " + short_number(v));
  if (!(within(v, rule) || (rule.zero && v == 0)))
    refuse(where, "must be " + rule_text(rule) + ", got " + short_number(v));
  // Only a setting whose rule is wider than its type gets here.
  if (v < lo || v > hi)
    refuse(where, "is out of range (" + short_number(lo) + " to " + short_number(hi) + "), got " +
                      short_number(v));
}

std::string quoted_list(const std::vector<std::string>& names) {
  std::string s;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i > 0) s += i + 1 == names.size() ? " or " : ", ";
    s += "\"" + names[i] + "\"";
  }
  return s;
}

double number_from_text(std::string_view text, const std::string& where) {
  if (const auto v = number_in_text(text)) return *v;
  double v = 0;
  if (std::from_chars(text.data(), text.data() + text.size(), v).ec ==
      std::errc::result_out_of_range)
    refuse(where, "cannot be represented as a double, got '" + std::string(text) + "'");
  refuse(where, "must be a number, got '" + std::string(text) + "'");
  return 0;
}

std::int64_t integer_from_text(std::string_view text, const std::string& where) {
  if (const auto v = integer_in_text(text)) return *v;
  std::int64_t v = 0;
  if (std::from_chars(text.data(), text.data() + text.size(), v).ec ==
      std::errc::result_out_of_range)
    refuse(where, "is out of range, got " + std::string(text));
  refuse(where, "must be an integer, got '" + std::string(text) + "'");
  return 0;
}

const std::string* raw_string(const RawValue& raw) {
  return std::get_if<std::string>(&raw);
}

}  // namespace setting_detail

double checked_number_from_text(std::string_view text, const std::string& where,
                                const NumberRule& rule) {
  const double v = setting_detail::number_from_text(text, where);
  setting_detail::check_number(v, where, rule, -std::numeric_limits<double>::max(),
                               std::numeric_limits<double>::max());
  return v;
}

std::int64_t checked_integer_from_text(std::string_view text, const std::string& where,
                                       const NumberRule& rule) {
  const std::int64_t v = setting_detail::integer_from_text(text, where);
  setting_detail::check_number(static_cast<double>(v), where, rule,
                               static_cast<double>(std::numeric_limits<std::int64_t>::lowest()),
                               static_cast<double>(std::numeric_limits<std::int64_t>::max()));
  return v;
}

std::optional<double> number_in_text(std::string_view text) {
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return {};
  return v;
}

std::optional<std::int64_t> integer_in_text(std::string_view text) {
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return {};
  return v;
}

}  // namespace ringattn
