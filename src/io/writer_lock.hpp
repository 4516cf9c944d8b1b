// One writer per output file. Two jobs on one output (a double submission:
// the Slurm scripts always pass --resume) would otherwise share or delete
// each other's partial file and commit a mix. The job that writes an output
// first takes an exclusive lock on a small lock file beside it,
// `.<name>.lock`, and holds it until the output is committed, suspended or
// abandoned; a second job finds the lock held and is refused.
//
// The lock is an open-file-description lock (fcntl F_OFD_SETLK) on the whole
// lock file: the kernel drops it when the holder dies (kill -9, a node lost
// with its NFS lease), so a crashed run never blocks its own --resume. What
// it guarantees where:
//   - local filesystems (ext4, xfs, tmpfs): every process on the node;
//   - NFS v3 (NLM) and v4: every client of the server, via the server's lock
//     manager; a client that loses its lease loses the lock;
//   - Lustre: every client when mounted with `-o flock`; with `localflock`
//     only the processes of one node; with `noflock` (or any filesystem
//     without locks) the lock cannot be taken: the job says so in one
//     warning line and runs without the protection.
// The holder writes "pid P on HOST since TIME" into the file, so a refusal
// can say who holds it. The lock file is removed by its holder while still
// locked; a taker that locked a file already removed (it raced with that
// removal) sees another inode under the name and tries again.
//
// Rank-local (no MPI): the job's rank 0 takes it for all ranks.
//
// Includes: <string>.
#pragma once

#include <string>

namespace ringattn {

class WriterLock {
 public:
  WriterLock() = default;
  // Takes the lock for the output `target`, or throws Error(usage)
  // "<ctx>: another run is writing it (...)". Errors of the filesystem
  // itself (the directory vanished) are Error(io). On a filesystem without
  // locks, returns an unheld lock after printing one warning.
  static WriterLock acquire(const std::string& target, const std::string& ctx);

  WriterLock(WriterLock&& o) noexcept;
  WriterLock& operator=(WriterLock&& o) noexcept;
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;
  ~WriterLock() { release(); }

  // Removes the lock file and drops the lock. Idempotent.
  void release() noexcept;
  bool held() const { return fd_ >= 0; }
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

// The lock file's name for an output: `.<name>.lock` beside it (shortened
// for a long name: see hidden_sibling).
std::string writer_lock_path(const std::string& target);

}  // namespace ringattn
