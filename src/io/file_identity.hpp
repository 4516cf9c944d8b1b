// Which file a path names, as the filesystem sees it: used to refuse an
// output that would overwrite the input, and recorded in the output's
// attributes so a result can be traced to the exact input it came from.
//
// Also the checks every path passes before it is opened: one to read
// (check_readable_file) and one for a new file (check_new_file_target), and
// the names of the hidden files the run keeps beside its output.
//
// Includes: <cstdint>, <string>.
#pragma once

#include <cstdint>
#include <string>

namespace ringattn {

struct FileIdentity {
  std::string path;           // absolute, symbolic links resolved
  std::uint64_t device = 0;   // st_dev
  std::uint64_t inode = 0;    // st_ino
  std::int64_t size = 0;      // bytes
  std::int64_t mtime_ns = 0;  // last modification, ns since the epoch
};

// stat() of an existing path (local to the calling rank, not collective).
// Throws Error(io) naming the path and the system's reason when it fails.
FileIdentity file_identity(const std::string& path);

// Same inode on the same device: two names of one file (links, "./x", ...).
inline bool same_file(const FileIdentity& a, const FileIdentity& b) {
  return a.device == b.device && a.inode == b.inode;
}

// The directory a path's file lives in ("." for a bare name).
std::string directory_of(const std::string& path);

// What a stat mode is, in words: "a regular file", "a directory", "a FIFO
// (named pipe)", "a character device", "a block device", "a socket", "a
// symbolic link".
const char* file_kind_name(unsigned mode);

// Rank-local, before anything opens `path` to read it: it exists (a
// dangling symbolic link is named as one), is a regular file, and is
// readable; else Error io "<ctx>: ...". A FIFO or a device is refused here
// and never opened: opening a FIFO blocks until a writer comes, and reading
// /dev/zero never ends.
void check_readable_file(const std::string& path, const std::string& ctx);

// `.<name><suffix>` beside `target`: the hidden files of a run (partial
// output, lock, temporary names). A name too long for that (the filesystem
// takes 255 bytes per name) keeps its first bytes and a hash of the whole,
// so the sibling's name is still fixed for a target and distinct between
// targets.
std::string hidden_sibling(const std::string& target, const std::string& suffix);

// Rank-local checks before a new file is written at `path` under a temporary
// name: the directory exists and is writable (else Error io); the target is
// a file name within the filesystem's length limit, not a directory, FIFO,
// device or socket, not the file at `input_path` (if given), not a symbolic
// link that points nowhere, and does not exist unless `overwrite` (else
// Error usage; with overwrite a symbolic link is replaced, not followed). `ctx` starts every
// message. Returns a hidden temporary path in the same directory (so the
// final rename is atomic); pid and a random tag keep concurrent runs apart.
std::string check_new_file_target(const std::string& path, bool overwrite,
                                  const std::string& input_path, const std::string& ctx);

// Rank-local: the finished temporary file takes the target's name
// (atomically: same directory). Without overwrite a target that appeared
// meanwhile is not replaced (RENAME_NOREPLACE, or a check first where the
// filesystem lacks it): Error usage. The rename is fsync'd into the
// directory where the filesystem allows. `what` names the file in messages
// ("output file", "metrics file").
void rename_into_place(const std::string& temp, const std::string& target, bool overwrite,
                       const std::string& what);

// The path a file at `path` will have, existing or not (absolute, links in
// the existing part resolved): two names of one future file compare equal.
std::string future_path(const std::string& path);

}  // namespace ringattn
