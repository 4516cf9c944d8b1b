// MPI for the subcommands that need it (bench ring, and later run): started
// on first use so `ringattn --help` runs without a launcher, finalised at exit.
#pragma once

#include <mpi.h>

#include <functional>

namespace ringattn::cli {

class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  int rank() const { return rank_; }
  int size() const { return size_; }
  // Ends the whole job at once: for an error only some ranks saw, where the
  // others would wait forever in their next collective.
  [[noreturn]] void abort(int code) const;

  // Until this is called, errors come from checks every rank makes alike on
  // the same arguments (so all ranks fail together and rank 0 alone speaks);
  // after it, an error may be one rank's own, and ends the job.
  void begin_independent_work() { independent_ = true; }
  bool independent_work() const { return independent_; }

 private:
  int rank_ = 0, size_ = 1;
  bool independent_ = false;
};

// One-process tools under mpirun: rank 0 runs work; agree() hands its
// Error, if any, to every rank, so all return together (main prints it
// once), and every rank returns rank 0's exit code.
int on_rank0(const MpiSession& mpi, const std::function<int()>& work);

}  // namespace ringattn::cli
