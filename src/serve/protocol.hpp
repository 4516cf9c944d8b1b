// The service's wire format (docs/service.md): a message is a JSON header
// frame followed by one raw frame per array the header lists, C order,
// little-endian. This file decodes and checks frames into a Message and
// encodes replies; it knows no sockets and no attention.
//
// Includes: nlohmann/json.hpp, core/error.hpp.
#pragma once
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace ringattn::serve {

enum class WireDType { f32, f16, i64 };
const char* wire_dtype_name(WireDType t);
std::size_t wire_dtype_size(WireDType t);
std::optional<WireDType> parse_wire_dtype(const std::string& s);

struct WireArray {
  std::string name;
  WireDType dtype = WireDType::f32;
  std::vector<std::int64_t> shape;
  std::string bytes;  // exactly elements() * wire_dtype_size(dtype)
  std::int64_t elements() const;
};

struct Message {
  nlohmann::json header = nlohmann::json::object();
  std::vector<WireArray> arrays;
  // The array called name, or nullptr.
  const WireArray* array(const std::string& name) const;
};

// Frames [header, array...] into a Message. Throws Error(usage) naming what
// is wrong: a header that is not a JSON object, an "arrays" entry without a
// name, a known dtype or a shape of non-negative sizes, a frame count or a
// frame length that disagrees with the entries.
Message decode_message(std::vector<std::string> frames);
// A Message into frames; header["arrays"] is written from msg.arrays.
std::vector<std::string> encode_message(const Message& msg);

// Typed header fields: a missing required field, or any field of the wrong
// type, is an Error(usage) "<op>: field '<name>' must be ...".
std::string field_string(const nlohmann::json& h, const char* name);
std::optional<std::string> optional_string(const nlohmann::json& h, const char* name);
std::int64_t field_int(const nlohmann::json& h, const char* name);
std::optional<std::int64_t> optional_int(const nlohmann::json& h, const char* name);
bool optional_bool(const nlohmann::json& h, const char* name, bool fallback);

// {"ok": false, "class": ..., "error": ...}: classes are the error classes'
// names (usage, input, io, ...) plus "busy".
Message error_reply(const std::string& cls, const std::string& text);
Message error_reply(const Error& e);
Message ok_reply(nlohmann::json fields = nlohmann::json::object());

// A context's name: 1-128 characters of [A-Za-z0-9_.-] (names appear in
// listings and messages, so nothing that could break a line or a shell).
void check_context_name(const std::string& name);

}  // namespace ringattn::serve
