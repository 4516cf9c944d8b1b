// `ringattn serve`: long key/value contexts resident across the ranks,
// attend requests answered by every rank over its shard and merged exactly
// by an MPI_Reduce tree (docs/service.md).
//
// Rank 0 runs two threads. The front door (a helper thread, no MPI) owns the
// ZeroMQ socket: it decodes and checks requests, answers ping/list/status/
// job_status from a snapshot, queues the rest (bounded: "busy" beyond) and
// sends replies. The executor (the MPI thread) takes requests in order,
// batches consecutive attends against one context into one kernel pass,
// broadcasts each command to the other ranks, which wait in a loop for it,
// and every rank applies it; a step that fails anywhere fails everywhere
// (agree), and the request gets one error line while the service goes on.
//
// Includes: mpi.h, <string>, <vector>.
#pragma once
#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ringattn::serve {

struct ServeOptions {
  std::string socket;       // Unix socket path ("" when tcp is set: see endpoint())
  std::string tcp;          // HOST:PORT to listen on instead ("" = Unix socket)
  std::string secret_file;  // file holding the shared secret (TCP beyond loopback needs it)
  std::string data_dir;     // paths in requests resolve here and may not leave it
  int queue = 256;          // requests that may wait; beyond: "busy"
  std::int64_t max_request_mb = 1024;  // larger messages are refused undecoded
  std::int64_t page_tokens = 2048;     // tokens per page of a context's shards
  std::int64_t max_batch_rows = 4096;  // query rows per head batched into one pass
  int threads = 1;                     // kernel threads per rank
  double comm_timeout = 1800;          // s a rank may block on peers in a collective
  std::vector<std::pair<std::string, std::string>> contexts;  // (name, HDF5 file) at start
};

// The ZeroMQ endpoint the options name ("ipc://..." or "tcp://...").
std::string endpoint_of(const ServeOptions& o);

// Runs the service until a stop signal (job/stop_request.hpp); collective
// over comm, every rank with the same options. `ready` is printed on rank 0
// once the socket listens (the endpoint follows it). Returns after every
// accepted request was answered.
void run_service(MPI_Comm comm, const ServeOptions& options);

}  // namespace ringattn::serve
