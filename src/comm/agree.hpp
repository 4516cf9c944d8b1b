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

// Collective over comm. Returns normally on every rank, or throws the same
// Error on every rank. Exceptions other than ringattn::Error count as
// ErrorClass::internal (std::bad_alloc included).
void agree(MPI_Comm comm, const std::function<void()>& step);

}  // namespace ringattn
