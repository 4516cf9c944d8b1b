// Fault injection (see fault_injection.hpp).
#include "job/fault_injection.hpp"

#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <thread>

#include "core/error.hpp"

namespace ringattn {

FaultPlan parse_fault_plan(const std::string& text) {
  const std::string ctx = "RINGATTN_FAULT='" + text + "'";
  std::istringstream in(text);
  std::string part;
  FaultPlan p;
  bool first = true, have_rank = false;
  while (std::getline(in, part, ':')) {
    if (first) {
      first = false;
      if (part == "kill")
        p.action = FaultPlan::Action::kill;
      else if (part == "hang")
        p.action = FaultPlan::Action::hang;
      else if (part == "pause")
        p.action = FaultPlan::Action::pause;
      else if (part == "term")
        p.action = FaultPlan::Action::term;
      else if (part == "usr1")
        p.action = FaultPlan::Action::usr1;
      else
        RA_CHECK(false, usage, ctx, ": unknown action '", part,
                 "' (kill, hang, pause, term, usr1)");
      continue;
    }
    const auto eq = part.find('=');
    RA_CHECK(eq != std::string::npos, usage, ctx, ": expected key=value, got '", part, "'");
    const std::string key = part.substr(0, eq), value = part.substr(eq + 1);
    char* end = nullptr;
    const long long n = std::strtoll(value.c_str(), &end, 10);
    RA_CHECK(!value.empty() && end && *end == '\0' && n >= 0, usage, ctx, ": '", key,
             "' must be a non-negative integer, got '", value, "'");
    if (key == "rank") {
      p.rank = static_cast<int>(n);
      have_rank = true;
    } else if (key == "chunk") {
      p.chunk = n;
    } else if (key == "step") {
      RA_CHECK(n >= 1, usage, ctx, ": step counts from 1");
      p.step = static_cast<int>(n);
    } else if (key == "ms") {
      p.pause_ms = n;
    } else {
      RA_CHECK(false, usage, ctx, ": unknown key '", key, "' (rank, chunk, step, ms)");
    }
  }
  RA_CHECK(!first, usage, ctx, ": empty");
  RA_CHECK(have_rank, usage, ctx, ": rank=<r> is required");
  return p;
}

std::optional<FaultPlan> fault_plan_from_env() {
  const char* e = std::getenv("RINGATTN_FAULT");
  if (!e || !*e) return std::nullopt;
  return parse_fault_plan(e);
}

void maybe_inject_fault(const std::optional<FaultPlan>& plan, int rank, std::int64_t chunk,
                        int step) {
  if (!plan || plan->rank != rank || plan->chunk != chunk || plan->step != step) return;
  std::fprintf(stderr, "RINGATTN_FAULT: rank %d injects its fault at chunk %lld step %d\n", rank,
               static_cast<long long>(chunk), step);
  std::fflush(stderr);
  switch (plan->action) {
    case FaultPlan::Action::kill:
      std::raise(SIGKILL);
      break;
    case FaultPlan::Action::hang:
      for (;;) ::pause();
    case FaultPlan::Action::pause:
      std::this_thread::sleep_for(std::chrono::milliseconds(plan->pause_ms));
      break;
    case FaultPlan::Action::term:
      std::raise(SIGTERM);
      break;
    case FaultPlan::Action::usr1:
      std::raise(SIGUSR1);
      break;
  }
}

}  // namespace ringattn
