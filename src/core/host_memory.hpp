// How much memory this process may still allocate on its host: the kernel's
// MemAvailable, capped by the cgroup's remaining limit (a Slurm job's memory,
// a container's). Plans check their buffers against it before allocating,
// so a shape that cannot fit is one line, not std::bad_alloc or an
// out-of-memory kill that the other ranks see as a dead peer.
//
// Includes: <cstdint>.
#pragma once

#include <cstdint>

namespace ringattn {

// Bytes still available to this process, or -1 when neither /proc/meminfo
// nor a cgroup limit tells.
std::int64_t available_memory_bytes();

}  // namespace ringattn
