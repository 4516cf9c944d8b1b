// How rank 0's executor hands a command to the other ranks: a JSON head and
// a blob of array bytes, broadcast. The others wait for the next one
// polling a non-blocking broadcast, asleep when idle (a waiting service must
// not burn the cores other jobs share); the root's side of the broadcast is
// watched by the comm watchdog from its start, the others' once a command
// came.
//
// Includes: mpi.h, nlohmann/json.hpp.
#pragma once
#include <mpi.h>

#include <nlohmann/json.hpp>
#include <string>

namespace ringattn::serve {

struct Command {
  nlohmann::json head;
  std::string blob;
};

// Collective over comm. Root (rank 0): sends cmd. Others: wait for one and
// fill cmd.
void broadcast_command(MPI_Comm comm, bool root, Command& cmd);

}  // namespace ringattn::serve
