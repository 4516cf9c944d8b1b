// The service's wire format (see protocol.hpp).
#include "serve/protocol.hpp"

#include <algorithm>
#include <limits>

namespace ringattn::serve {

const char* wire_dtype_name(WireDType t) {
  switch (t) {
    case WireDType::f32:
      return "f32";
    case WireDType::f16:
      return "f16";
    case WireDType::i64:
      return "i64";
  }
  return "?";
}

std::size_t wire_dtype_size(WireDType t) {
  return t == WireDType::f16 ? 2 : t == WireDType::f32 ? 4 : 8;
}

std::optional<WireDType> parse_wire_dtype(const std::string& s) {
  for (WireDType t : {WireDType::f32, WireDType::f16, WireDType::i64})
    if (s == wire_dtype_name(t)) return t;
  return std::nullopt;
}

std::int64_t WireArray::elements() const {
  std::int64_t n = 1;
  for (std::int64_t s : shape) n *= s;
  return n;
}

const WireArray* Message::array(const std::string& name) const {
  for (const WireArray& a : arrays)
    if (a.name == name) return &a;
  return nullptr;
}

Message decode_message(std::vector<std::string> frames) {
  RA_CHECK(!frames.empty(), usage, "the message has no header frame");
  Message m;
  try {
    m.header = nlohmann::json::parse(frames[0]);
  } catch (const nlohmann::json::exception&) {
    RA_FAIL(usage, "the header frame is not JSON");
  }
  RA_CHECK(m.header.is_object(), usage, "the header must be a JSON object");
  const auto it = m.header.find("arrays");
  const std::size_t listed = it == m.header.end() ? 0 : it->is_array() ? it->size() : 0;
  RA_CHECK(it == m.header.end() || it->is_array(), usage, "'arrays' must be a list");
  RA_CHECK(frames.size() == listed + 1, usage, "the header lists ", listed, " arrays but ",
           frames.size() - 1, " array frames came");
  for (std::size_t i = 0; i < listed; ++i) {
    const nlohmann::json& e = (*it)[i];
    RA_CHECK(e.is_object() && e.contains("name") && e["name"].is_string(), usage, "arrays[", i,
             "] needs a string 'name'");
    WireArray a;
    a.name = e["name"].get<std::string>();
    RA_CHECK(std::none_of(m.arrays.begin(), m.arrays.end(),
                          [&](const WireArray& b) { return b.name == a.name; }),
             usage, "array '", a.name, "' is listed twice");
    const auto dt = e.contains("dtype") && e["dtype"].is_string()
                        ? parse_wire_dtype(e["dtype"].get<std::string>())
                        : std::nullopt;
    RA_CHECK(dt.has_value(), usage, "array '", a.name, "': dtype must be f32, f16 or i64");
    a.dtype = *dt;
    RA_CHECK(e.contains("shape") && e["shape"].is_array() && e["shape"].size() <= 8, usage,
             "array '", a.name, "': shape must be a list of at most 8 sizes");
    // Sizes are bounded before they multiply, so no product overflows.
    double product = 1;
    for (const nlohmann::json& s : e["shape"]) {
      RA_CHECK(s.is_number_integer() && s.get<std::int64_t>() >= 0 &&
                   s.get<std::int64_t>() <= (std::int64_t{1} << 40),
               usage, "array '", a.name, "': shape sizes must be integers >= 0");
      a.shape.push_back(s.get<std::int64_t>());
      product *= static_cast<double>(a.shape.back());
    }
    const double want = product * static_cast<double>(wire_dtype_size(a.dtype));
    RA_CHECK(want == static_cast<double>(frames[i + 1].size()), usage, "array '", a.name,
             "': its frame holds ", frames[i + 1].size(), " bytes, its shape and dtype need ",
             static_cast<std::int64_t>(std::min(want, 9e18)));
    a.bytes = std::move(frames[i + 1]);
    m.arrays.push_back(std::move(a));
  }
  return m;
}

std::vector<std::string> encode_message(const Message& msg) {
  nlohmann::json h = msg.header;
  nlohmann::json list = nlohmann::json::array();
  for (const WireArray& a : msg.arrays)
    list.push_back({{"name", a.name}, {"dtype", wire_dtype_name(a.dtype)}, {"shape", a.shape}});
  if (!msg.arrays.empty()) h["arrays"] = list;
  std::vector<std::string> frames{h.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)};
  for (const WireArray& a : msg.arrays) frames.push_back(a.bytes);
  return frames;
}

namespace {

std::string op_of(const nlohmann::json& h) {
  const auto it = h.find("op");
  return it != h.end() && it->is_string() ? it->get<std::string>() : std::string("request");
}

}  // namespace

std::optional<std::string> optional_string(const nlohmann::json& h, const char* name) {
  const auto it = h.find(name);
  if (it == h.end() || it->is_null()) return std::nullopt;
  RA_CHECK(it->is_string(), usage, op_of(h), ": field '", name, "' must be a string");
  return it->get<std::string>();
}

std::string field_string(const nlohmann::json& h, const char* name) {
  auto s = optional_string(h, name);
  RA_CHECK(s.has_value(), usage, op_of(h), ": field '", name, "' is missing");
  return *s;
}

std::optional<std::int64_t> optional_int(const nlohmann::json& h, const char* name) {
  const auto it = h.find(name);
  if (it == h.end() || it->is_null()) return std::nullopt;
  RA_CHECK(it->is_number_integer(), usage, op_of(h), ": field '", name, "' must be an integer");
  return it->get<std::int64_t>();
}

std::int64_t field_int(const nlohmann::json& h, const char* name) {
  auto v = optional_int(h, name);
  RA_CHECK(v.has_value(), usage, op_of(h), ": field '", name, "' is missing");
  return *v;
}

bool optional_bool(const nlohmann::json& h, const char* name, bool fallback) {
  const auto it = h.find(name);
  if (it == h.end() || it->is_null()) return fallback;
  RA_CHECK(it->is_boolean(), usage, op_of(h), ": field '", name, "' must be true or false");
  return it->get<bool>();
}

Message error_reply(const std::string& cls, const std::string& text) {
  Message m;
  // One line: a multi-line library message is folded.
  std::string line = text;
  std::replace(line.begin(), line.end(), '\n', ' ');
  m.header = {{"ok", false}, {"class", cls}, {"error", line}};
  return m;
}

Message error_reply(const Error& e) {
  return error_reply(error_class_name(e.error_class()), user_text(e));
}

Message ok_reply(nlohmann::json fields) {
  Message m;
  m.header = std::move(fields);
  m.header["ok"] = true;
  return m;
}

void check_context_name(const std::string& name) {
  const bool ok =
      !name.empty() && name.size() <= 128 && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '.' || c == '-';
      });
  RA_CHECK(ok, usage, "a context name must be 1-128 characters of letters, digits, '_', '.', '-'");
}

}  // namespace ringattn::serve
