// Timing the ring (`ringattn bench ring`, under mpirun): the same seeded
// problem on one rank (the baseline) and on every rank, the hop alone at the
// largest block's size, per-rank and per-step figures. With `backward` the
// backward ring is timed the same way (each run after an untimed forward
// for its o and lse; T1 the one-rank backward; flops 2.5x the forward's),
// the hop at its largest message (a block with the gradients of another
// behind it). The result is one JSON record on rank 0 (what --json prints;
// the text form is drawn from it), so the fields are named once; its
// "pass" says forward or backward.
//
// Includes: <mpi.h>, <cstdint>, <optional>, <string>, <nlohmann/json.hpp>.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace ringattn {

struct RingBenchRequest {
  std::int64_t n = 8192, n_kv = 0, d = 128, heads = 4, kv_heads = 0, batch = 1;  // 0: as n, heads
  std::string dtype = "f32", compute = "f32", partition;  // partition "": by causal
  std::string window = "none";                            // Window's text form
  std::string docs;                // packed sequences (packed_offsets spec, batch 1); "": dense
  int threads = 0, p2p_iters = 5;  // threads 0: this rank's share
  bool causal = false, baseline = true, poll = true;
  bool backward = false;  // time the backward ring (compute f32)
  std::uint64_t seed = 1;
};

// In two steps, so the caller can mark where agreed checks end: the
// constructor checks the request on every rank alike (Error(usage) /
// Error(input), the same on all); run() measures (collective over comm) and
// returns the record on rank 0, nothing elsewhere.
class RingBench {
 public:
  RingBench(MPI_Comm comm, const RingBenchRequest& req);
  std::optional<nlohmann::json> run() const;

 private:
  MPI_Comm comm_;
  RingBenchRequest req_;
};

// Seconds per ring hop of `bytes` (median of iters, after one untimed hop
// that sets up connections): every rank of comm sends to the next and
// receives from the previous at once, as the ring does; the slowest rank's
// time. Collective over comm.
double time_hop(MPI_Comm comm, std::uint64_t bytes, int iters);

}  // namespace ringattn
