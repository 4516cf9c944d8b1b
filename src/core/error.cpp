// Error formatting: every message carries file:line and host:rank so a line in
// a 1000-rank job log says where it came from.
#include "core/error.hpp"

#include <unistd.h>

#include "core/cpu.hpp"

namespace ringattn {

const char* error_class_name(ErrorClass c) {
  switch (c) {
    case ErrorClass::usage:
      return "usage";
    case ErrorClass::input:
      return "input";
    case ErrorClass::io:
      return "io";
    case ErrorClass::comm:
      return "communication";
    case ErrorClass::fault:
      return "fault";
    case ErrorClass::internal:
      return "internal";
  }
  return "unknown";
}

namespace detail {

std::string where_am_i() {
  char host[256] = "?";
  gethostname(host, sizeof host - 1);
  return concat(host, ":", launcher_rank());
}

void throw_error(ErrorClass cls, const char* file, int line, const std::string& msg) {
  // Users see `msg`; the location helps us. Strip the directory from file.
  std::string f(file);
  if (auto pos = f.find("src/"); pos != std::string::npos) f = f.substr(pos + 4);
  throw Error(cls, concat(msg, " [", f, ":", line, ", ", where_am_i(), "]"));
}

}  // namespace detail
}  // namespace ringattn
