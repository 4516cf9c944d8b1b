// Fault injection for the reliability tests: RINGATTN_FAULT makes one rank
// misbehave at a chosen point of a run, so the tests can show what the job
// does when a rank dies, hangs or is signalled. Not for production use; a
// malformed setting is a usage error, so a typo cannot go unnoticed.
//
//   RINGATTN_FAULT=<action>:rank=<r>[:chunk=<c>][:step=<s>][:ms=<n>]
//     action  kill   the rank SIGKILLs itself (a crashed node)
//             hang   the rank stops making progress (sleeps forever)
//             pause  the rank sleeps ms milliseconds, then goes on (a slow
//                    node; lets a test act on files while the run is open)
//             term   the rank raises SIGTERM (as scancel would)
//             usr1   the rank raises SIGUSR1 (as Slurm's --signal would)
//     chunk   0-based chunk of the run (default 0)
//     step    ring step after which it fires, 1 .. ranks (default 1), after
//             that step's stop agreement: a signal raised there stops the
//             run at the next step boundary. A --backward chunk counts its
//             forward's steps 1 .. ranks, then its backward's ranks + 1 ..
//             2 ranks
//     ms      pause's length (default 1000)
//
// Includes: <cstdint>, <optional>, <string>.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace ringattn {

struct FaultPlan {
  enum class Action { kill, hang, pause, term, usr1 } action = Action::kill;
  int rank = 0;
  std::int64_t chunk = 0;
  int step = 1;
  std::int64_t pause_ms = 1000;
};

// Parses a RINGATTN_FAULT value; throws Error(usage) naming the problem.
FaultPlan parse_fault_plan(const std::string& text);
// The plan from the environment, if RINGATTN_FAULT is set and not empty.
std::optional<FaultPlan> fault_plan_from_env();
// Called after ring step `step` of chunk `chunk` on `rank`: acts if the plan says so.
void maybe_inject_fault(const std::optional<FaultPlan>& plan, int rank, std::int64_t chunk,
                        int step);

}  // namespace ringattn
