// The parts a table of settings is made of, for any config struct C: one
// Setting<C, T> row per member (its TOML section and key, its flag, help,
// check, and whether it changes a result's bits), and the one way a value
// from any edge (a flag's text, a TOML node, a struct filled by a caller)
// is converted and checked. Flags and config files therefore refuse the same
// values with the same one-line Error(usage) message, which names where the
// value came from ("--scale", "run.toml: attention.scale").
//
// Rules every number obeys: it is finite (NaN and Inf are refused wherever a
// number is meant), and within its NumberRule; an integer fits its type.
// Bounds are printed with %g: never a 309-digit float maximum.
//
// Enums are parsed here, once, at the edge: EnumNames<E> lists an enum's
// values and names them; std::optional<E> is an enum with "auto" (unset).
// A value type with a text form of its own (a window, "L,R") is a
// TextValue: T::parse(text, where), v.text() and T::metavar.
//
// Includes: <array>, <optional>, <string>, <variant>, <vector>.
#pragma once

#include <array>
#include <concepts>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "core/error.hpp"
#include "core/message_text.hpp"

namespace ringattn {

// What a number setting accepts, beyond being finite.
struct NumberRule {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  bool above = false;          // lo itself is refused (> lo, not >= lo)
  const char* zero = nullptr;  // 0 is accepted too, even outside [lo, hi], and means this
  const char* unit = nullptr;  // printed after the bounds ("seconds")
};

// One setting of config struct C, of value type T.
template <class C, class T>
struct Setting {
  using Config = C;
  using Value = T;
  const char* section;                // TOML table ([ring]) and JSON object
  const char* key;                    // key in it
  const char* flag;                   // the command-line flag; a switch (no value) for bools
  T C::*member;                       // where the value lives
  const char* help;                   // the flag's help; the default is appended from C{}
  NumberRule rule = {};               // numbers only
  bool result = false;                // changes a result's bits (part of a resume key)
  const char* resume_name = nullptr;  // its name in the resume key, when not `key`
  const char* off_flag = nullptr;     // bools: a second switch that sets it false

  std::string name() const { return std::string(section) + "." + key; }
};

// An enum's values (in the order help lists them) and names. Specialise
// with `static constexpr std::array values` and `static const char* name(E)`.
template <class E>
struct EnumNames;

template <class T>
concept TextValue = requires(const T& v, std::string_view text, const std::string& where) {
  { T::parse(text, where) } -> std::same_as<T>;
  { v.text() } -> std::convertible_to<std::string>;
  { T::metavar } -> std::convertible_to<const char*>;
};

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

// A value as it arrives from an edge, before it is checked: a TOML node or
// a flag's text already converted to the kind of its setting.
// std::monostate: a TOML node of another kind (an array, a date).
using RawValue = std::variant<std::monostate, bool, std::int64_t, double, std::string>;

// The name of an enum value ("auto" for an unset optional one).
template <class T>
std::string choice_name(const T& v) {
  if constexpr (TextValue<T>)
    return v.text();
  else if constexpr (is_optional<T>::value)
    return v ? EnumNames<typename T::value_type>::name(*v) : "auto";
  else
    return EnumNames<T>::name(v);
}

namespace setting_detail {

[[noreturn]] void refuse(const std::string& where, const std::string& why);
// Throws unless v is finite and within the rule (and within [lo, hi], the
// limits of the setting's type).
void check_number(double v, const std::string& where, const NumberRule& rule, double lo, double hi);
std::string quoted_list(const std::vector<std::string>& names);  // "\"a\", \"b\" or \"c\""
double number_from_text(std::string_view text, const std::string& where);
std::int64_t integer_from_text(std::string_view text, const std::string& where);

template <class T>
constexpr bool is_choice = std::is_enum_v<T> || is_optional<T>::value;

// Every value of an enum setting, "auto" (unset) first for an optional one.
template <class T>
std::vector<T> all_choices() {
  std::vector<T> v;
  if constexpr (is_optional<T>::value) {
    v.push_back(std::nullopt);
    for (auto e : EnumNames<typename T::value_type>::values) v.push_back(e);
  } else {
    for (auto e : EnumNames<T>::values) v.push_back(e);
  }
  return v;
}

template <class T>
T parse_choice(std::string_view text, const std::string& where) {
  std::vector<std::string> names;
  for (const T& v : all_choices<T>()) {
    if (choice_name(v) == text) return v;
    names.push_back(choice_name(v));
  }
  refuse(where, "must be " + quoted_list(names) + ", got \"" + std::string(text) + "\"");
}

const std::string* raw_string(const RawValue& raw);

}  // namespace setting_detail

// A value's text as a flag or TOML key would spell it (help, messages).
template <class T>
std::string value_text(const T& v) {
  if constexpr (std::is_same_v<T, bool>)
    return v ? "true" : "false";
  else if constexpr (std::is_integral_v<T>)
    return std::to_string(v);
  else if constexpr (std::is_floating_point_v<T>)
    return short_number(static_cast<double>(v));
  else if constexpr (std::is_same_v<T, std::string>)
    return v;
  else
    return choice_name(v);
}

// Converts and checks `raw` for setting s, then stores it in c; otherwise
// throws Error(usage) "<where> must be ..., got ...".
template <class C, class T>
void assign(C& c, const Setting<C, T>& s, const RawValue& raw, const std::string& where) {
  using setting_detail::refuse;
  T& out = c.*s.member;
  if constexpr (std::is_same_v<T, bool>) {
    const bool* b = std::get_if<bool>(&raw);
    if (!b) refuse(where, "must be true or false");
    out = *b;
  } else if constexpr (std::is_integral_v<T>) {
    const std::int64_t* i = std::get_if<std::int64_t>(&raw);
    if (!i) refuse(where, "must be an integer");
    setting_detail::check_number(static_cast<double>(*i), where, s.rule,
                                 static_cast<double>(std::numeric_limits<T>::lowest()),
                                 static_cast<double>(std::numeric_limits<T>::max()));
    out = static_cast<T>(*i);
  } else if constexpr (std::is_floating_point_v<T>) {
    const std::int64_t* i = std::get_if<std::int64_t>(&raw);  // 2 is fine for a float
    const double* d = std::get_if<double>(&raw);
    if (!i && !d) refuse(where, "must be a number");
    const double v = d ? *d : static_cast<double>(*i);
    setting_detail::check_number(v, where, s.rule, std::numeric_limits<T>::lowest(),
                                 std::numeric_limits<T>::max());
    out = static_cast<T>(v);
  } else if constexpr (TextValue<T>) {
    // TOML may spell a text value that is a number as one (window = 4096).
    const std::int64_t* i = std::get_if<std::int64_t>(&raw);
    const std::string* text = setting_detail::raw_string(raw);
    if (!i && !text) refuse(where, std::string("must be a string (") + T::metavar + ")");
    out = T::parse(i ? std::to_string(*i) : *text, where);
  } else {
    const std::string* text = setting_detail::raw_string(raw);
    if (!text) refuse(where, "must be a string");
    if constexpr (std::is_same_v<T, std::string>)
      out = *text;
    else
      out = setting_detail::parse_choice<T>(*text, where);
  }
}

// Checks the value s holds in c (a struct a caller filled), as assign would.
template <class C, class T>
void check_value(const C& c, const Setting<C, T>& s) {
  const T& v = c.*s.member;
  if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>)
    setting_detail::check_number(static_cast<double>(v), s.name(), s.rule,
                                 static_cast<double>(std::numeric_limits<T>::lowest()),
                                 static_cast<double>(std::numeric_limits<T>::max()));
}

// A flag's text as the kind of value setting s holds (bools are switches:
// they have no text).
template <class C, class T>
RawValue raw_from_text(const Setting<C, T>&, std::string_view text, const std::string& where) {
  static_assert(!std::is_same_v<T, bool>, "a bool setting is a switch");
  if constexpr (std::is_integral_v<T>)
    return setting_detail::integer_from_text(text, where);
  else if constexpr (std::is_floating_point_v<T>)
    return setting_detail::number_from_text(text, where);
  else
    return std::string(text);
}

// The flag's help: s.help, what 0 means, and the default (from C{}).
template <class C, class T>
std::string setting_help(const Setting<C, T>& s) {
  std::string h = s.help;
  if (s.rule.zero) h += std::string(" (0: ") + s.rule.zero + ")";
  const std::string def = value_text(C{}.*s.member);
  if (!std::is_same_v<T, bool> && !def.empty()) h += " [default: " + def + "]";
  return h;
}

// What the flag's value looks like in --help: "cpu|cuda", "INT", "NUMBER".
template <class C, class T>
std::string setting_metavar(const Setting<C, T>&) {
  if constexpr (setting_detail::is_choice<T>) {
    std::string m;
    for (const T& v : setting_detail::all_choices<T>()) {
      if (!m.empty()) m += '|';
      m += choice_name(v);
    }
    return m;
  } else if constexpr (TextValue<T>) {
    return T::metavar;
  } else if constexpr (std::is_integral_v<T>) {
    return "INT";
  } else if constexpr (std::is_floating_point_v<T>) {
    return "NUMBER";
  } else {
    return "TEXT";
  }
}

// A number (an integer) from a flag's text checked against `rule`, for
// flags that are not part of a settings table (verify --tolerance, --rows):
// the same parse, the same messages.
double checked_number_from_text(std::string_view text, const std::string& where,
                                const NumberRule& rule);
std::int64_t checked_integer_from_text(std::string_view text, const std::string& where,
                                       const NumberRule& rule);

// The number (integer) all of `text` spells, or nothing: the same parse as
// the settings', for callers that word their own refusal.
std::optional<double> number_in_text(std::string_view text);
std::optional<std::int64_t> integer_in_text(std::string_view text);

}  // namespace ringattn
