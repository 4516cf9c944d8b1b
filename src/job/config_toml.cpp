// The TOML reader and writer of run configurations (see config_toml.hpp),
// with toml++ (Debian's libtomlplusplus-dev).
#include "job/config_toml.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <sstream>
#include <vector>

#include "core/error.hpp"

namespace ringattn {
namespace {

// A node as the kind of value it holds; the setting decides if that fits.
RawValue raw_of(const toml::node& n) {
  if (const auto b = n.value_exact<bool>()) return *b;
  if (const auto i = n.value_exact<std::int64_t>()) return *i;
  if (const auto d = n.value_exact<double>()) return *d;
  if (const auto s = n.value_exact<std::string>()) return *s;
  return std::monostate{};
}

// path names the text in messages; text, when given, is parsed instead of the file.
toml::table parse(const std::string& path, const std::string* text = nullptr) {
  try {
    return text ? toml::parse(*text, path) : toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& src = e.source();
    RA_CHECK(false, usage, path, ":", src.begin.line, ":", src.begin.column,
             ": not valid TOML: ", e.description());
  }
}

// Every key of the file is a section of the table holding settings of it.
void check_known_keys(const std::string& path, const toml::table& root) {
  std::vector<std::string> sections;
  std::set<std::string> names;
  for_each_setting([&](const auto& s) {
    if (sections.empty() || sections.back() != s.section) sections.push_back(s.section);
    names.insert(s.name());
  });
  std::string listed;
  for (const auto& s : sections) listed += (listed.empty() ? "" : ", ") + s;
  for (const auto& [k, v] : root) {
    const std::string section(k.str());
    RA_CHECK(std::find(sections.begin(), sections.end(), section) != sections.end(), usage, path,
             ": unknown key '", section, "' (sections: ", listed, ")");
    RA_CHECK(v.is_table(), usage, path, ": '", section, "' must be a table ([", section, "])");
    for (const auto& [key, value] : *v.as_table())
      RA_CHECK(names.count(section + "." + std::string(key.str())) != 0, usage, path,
               ": unknown key '", section, ".", key.str(), "'");
  }
}

// A value as a TOML node: enums by name, float settings as doubles.
template <class T>
void print_value(std::ostream& os, const T& v) {
  if constexpr (std::is_same_v<T, bool>)
    os << toml::value<bool>(v);
  else if constexpr (std::is_integral_v<T>)
    os << toml::value<std::int64_t>(v);
  else if constexpr (std::is_floating_point_v<T>)
    os << toml::value<double>(static_cast<double>(v));
  else if constexpr (std::is_same_v<T, std::string>)
    os << toml::value<std::string>(v);
  else
    os << toml::value<std::string>(choice_name(v));
}

}  // namespace

namespace {

void load_table(const std::string& path, const toml::table& root, JobConfig& cfg) {
  check_known_keys(path, root);
  for_each_setting([&](const auto& s) {
    if (const toml::node* n = root[s.section][s.key].node())
      assign(cfg, s, raw_of(*n), path + ": " + s.name());
  });
}

}  // namespace

void load_config_file(const std::string& path, JobConfig& cfg) {
  load_table(path, parse(path), cfg);
}

void load_config_text(const std::string& text, const std::string& where, JobConfig& cfg) {
  load_table(where, parse(where, &text), cfg);
}

std::string config_toml(const JobConfig& cfg) {
  std::ostringstream os;
  const char* section = nullptr;
  for_each_setting([&](const auto& s) {
    if (!section || std::strcmp(section, s.section) != 0) {
      os << (section ? "\n[" : "[") << s.section << "]\n";
      section = s.section;
    }
    os << s.key << " = ";
    print_value(os, cfg.*s.member);
    os << "\n";
  });
  return os.str();
}

}  // namespace ringattn
