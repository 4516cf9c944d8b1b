// One verdict for all ranks (STYLE 8). A parallel HDF5 call that one rank
// skips hangs the others, so every step that can fail on some ranks only
// (validation, an open, a transfer, a rename) runs through agree(): each rank
// runs the step, the ranks all-reduce whether anyone failed, and then every
// rank throws the same Error: the one of the lowest failing rank, with its
// class and its text (which names the host and rank it came from).
//
// Includes: mpi.h (MPI_Comm).
#pragma once

#include <mpi.h>

#include <functional>

namespace ringattn {

// What the step holds. A `local` step (checks, stat, a rank-0-only open)
// cannot leave a peer waiting. A `collective` step holds a collective call
// itself (a parallel HDF5 create, write, flush or close): a rank that fails
// inside it may have left the others waiting in that call, where they never
// reach the verdict. Such a failed rank waits a few seconds for its peers;
// if they do not come, it prints its error and ends the job (abort_job,
// core/error.hpp) with the error's exit code, instead of hanging until the
// watchdog blames a dead peer.
enum class StepKind { local, collective };

// Collective over comm. Returns normally on every rank, or throws the same
// Error on every rank (or, see StepKind, ends the job). Exceptions other
// than ringattn::Error count as ErrorClass::internal (std::bad_alloc
// included).
void agree(MPI_Comm comm, const std::function<void()>& step, StepKind kind = StepKind::local);

// How long a rank that failed in a collective step waits for its peers.
inline constexpr double kCollectiveStepGraceSeconds = 5.0;

}  // namespace ringattn
