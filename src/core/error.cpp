// Error formatting: every message carries file:line and host:rank so a line in
// a 1000-rank job log says where it came from; user_text() leaves them off
// the errors a user causes.
#include "core/error.hpp"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

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

namespace {
std::atomic<JobAbortHandler> g_abort_handler{nullptr};
}  // namespace

void set_job_abort_handler(JobAbortHandler handler) {
  g_abort_handler.store(handler);
}

std::string user_text(const Error& e) {
  std::string text = e.what();
  const ErrorClass c = e.error_class();
  const char* debug = std::getenv("RINGATTN_DEBUG");
  if ((debug && *debug && std::string(debug) != "0") ||
      (c != ErrorClass::usage && c != ErrorClass::input && c != ErrorClass::io))
    return text;
  // throw_error appends " [file.cpp:line, where]": the last bracket, if it is one.
  const auto at = text.rfind(" [");
  if (at != std::string::npos && text.back() == ']' && text.find(".cpp:", at) != std::string::npos)
    text.erase(at);
  return text;
}

JobAbortHandler job_abort_handler() {
  return g_abort_handler.load();
}

void abort_job(const JobAbort& how) {
  if (const JobAbortHandler h = g_abort_handler.load()) h(how);
  std::_Exit(how.exit_code);
}

void abort_job(const Error& e) {
  std::fprintf(stderr, "ringattn: %s error: %s\n", error_class_name(e.error_class()), e.what());
  std::fflush(stderr);
  abort_job(JobAbort{exit_code(e.error_class()), false});
}

namespace detail {

std::string where_am_i() {
  char host[256] = "?";
  gethostname(host, sizeof host - 1);
  return concat(host, ":", launcher_rank());
}

std::string call_name(const char* expr) {
  std::string s(expr);
  const auto open = s.find('(');
  if (open != std::string::npos) s.resize(open);
  // "RA_H5_CHECK(H5Fflush(f.get(), ...))" inside another macro: keep the last name.
  if (const auto sp = s.find_last_of(" :*&"); sp != std::string::npos) s = s.substr(sp + 1);
  return s;
}

void throw_error(ErrorClass cls, const char* file, int line, const std::string& msg) {
  // Users see `msg`; the location helps us. Strip the directory from file.
  std::string f(file);
  if (auto pos = f.find("src/"); pos != std::string::npos) f = f.substr(pos + 4);
  throw Error(cls, concat(msg, " [", f, ":", line, ", ", where_am_i(), "]"));
}

}  // namespace detail
}  // namespace ringattn
