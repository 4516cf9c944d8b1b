// stat() and realpath() behind FileIdentity (see file_identity.hpp).
#include "io/file_identity.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <sstream>

#include "core/error.hpp"

namespace ringattn {

FileIdentity file_identity(const std::string& path) {
  struct stat st {};
  RA_CHECK(::stat(path.c_str(), &st) == 0, io, "cannot stat '", path, "': ", std::strerror(errno));
  FileIdentity id;
  char resolved[PATH_MAX];
  id.path = ::realpath(path.c_str(), resolved) ? resolved : path;
  id.device = static_cast<std::uint64_t>(st.st_dev);
  id.inode = static_cast<std::uint64_t>(st.st_ino);
  id.size = static_cast<std::int64_t>(st.st_size);
  id.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 +
                static_cast<std::int64_t>(st.st_mtim.tv_nsec);
  return id;
}

std::string directory_of(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

const char* file_kind_name(unsigned mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "a file of unknown kind";
}

namespace {

// Where a symbolic link points ("?" when it cannot be read).
std::string link_text(const std::string& path) {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink(path.c_str(), buf, sizeof buf - 1);
  return n < 0 ? "?" : std::string(buf, static_cast<std::size_t>(n));
}

// True when path is a symbolic link whose target does not exist.
bool dangling_link(const std::string& path) {
  struct stat l {
  }, st{};
  return ::lstat(path.c_str(), &l) == 0 && S_ISLNK(l.st_mode) && ::stat(path.c_str(), &st) != 0;
}

// FNV-1a: a stable 64-bit hash (the same name hashes alike in every run).
std::uint64_t name_hash(const std::string& s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (const unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

}  // namespace

void check_readable_file(const std::string& path, const std::string& ctx) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    RA_CHECK(!dangling_link(path), io, ctx, ": is a symbolic link to '", link_text(path),
             "', which does not exist");
    RA_CHECK(err != ENOENT, io, ctx, ": no such file");
    RA_FAIL(io, ctx, ": cannot stat: ", std::strerror(err));
  }
  RA_CHECK(!S_ISDIR(st.st_mode), io, ctx, ": is a directory, not an HDF5 file");
  RA_CHECK(S_ISREG(st.st_mode), io, ctx, ": is ", file_kind_name(st.st_mode),
           ", not a regular file; only regular files are read (it was not opened)");
  RA_CHECK(::access(path.c_str(), R_OK) == 0, io, ctx, ": not readable: ", std::strerror(errno));
}

std::string hidden_sibling(const std::string& target, const std::string& suffix) {
  constexpr std::size_t kNameMax = NAME_MAX;  // 255 on every filesystem we run on
  std::string name = std::filesystem::path(target).filename().string();
  if (1 + name.size() + suffix.size() > kNameMax) {
    char tag[24];
    std::snprintf(tag, sizeof tag, "~%016llx", static_cast<unsigned long long>(name_hash(name)));
    const std::size_t keep = kNameMax - 1 - suffix.size() - std::strlen(tag);
    name = name.substr(0, std::min(keep, name.size())) + tag;
  }
  return directory_of(target) + "/." + name + suffix;
}

std::string check_new_file_target(const std::string& path, bool overwrite,
                                  const std::string& input_path, const std::string& ctx) {
  const std::string name = std::filesystem::path(path).filename().string();
  RA_CHECK(!name.empty() && name != "." && name != "..", usage, ctx, ": not a file name");

  const std::string dir = directory_of(path);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0)
    RA_CHECK(false, io, ctx, ": directory '", dir, "' ",
             errno == ENOENT ? "does not exist" : std::strerror(errno));
  RA_CHECK(S_ISDIR(st.st_mode), io, ctx, ": '", dir, "' is not a directory");
  RA_CHECK(::access(dir.c_str(), W_OK | X_OK) == 0, io, ctx, ": directory '", dir,
           "' is not writable: ", std::strerror(errno));
  const long name_max = ::pathconf(dir.c_str(), _PC_NAME_MAX);
  RA_CHECK(name_max <= 0 || name.size() <= static_cast<std::size_t>(name_max), usage, ctx,
           ": its name is ", name.size(), " bytes, longer than the ", name_max,
           " the filesystem takes");

  if (dangling_link(path))
    RA_CHECK(overwrite, usage, ctx, ": is a symbolic link to '", link_text(path),
             "', which does not exist; remove it, or set overwrite (--overwrite) to replace the "
             "link");
  if (::stat(path.c_str(), &st) == 0) {
    RA_CHECK(!S_ISDIR(st.st_mode), usage, ctx, ": is a directory");
    RA_CHECK(S_ISREG(st.st_mode), usage, ctx, ": is ", file_kind_name(st.st_mode),
             ", not a regular file; choose another path");
    if (!input_path.empty() && ::access(input_path.c_str(), F_OK) == 0)
      RA_CHECK(!same_file(file_identity(path), file_identity(input_path)), usage, ctx,
               ": is the input file '", input_path, "'; choose another path");
    RA_CHECK(overwrite, usage, ctx, ": exists; set overwrite (--overwrite) to replace it");
  }

  // The leading dot keeps the temporary file out of globs; pid and a random
  // tag keep concurrent runs apart.
  std::random_device rd;
  std::ostringstream tag;
  tag << ".tmp-" << ::getpid() << '-' << std::hex
      << (static_cast<std::uint64_t>(rd()) << 32 ^ rd() ^
          static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  return hidden_sibling(path, tag.str());
}

void rename_into_place(const std::string& temp, const std::string& target, bool overwrite,
                       const std::string& what) {
  const std::string ctx = what + " '" + target + "'";
  int rc = 0;
  if (overwrite) {
    rc = std::rename(temp.c_str(), target.c_str());
  } else {
    rc = ::renameat2(AT_FDCWD, temp.c_str(), AT_FDCWD, target.c_str(), RENAME_NOREPLACE);
    if (rc != 0 && (errno == EINVAL || errno == ENOSYS)) {
      struct stat st {};
      errno = EEXIST;
      rc = ::stat(target.c_str(), &st) == 0 ? -1 : std::rename(temp.c_str(), target.c_str());
    }
  }
  RA_CHECK(rc == 0 || errno != EEXIST, usage, ctx,
           ": appeared while the result was written; not replaced (set overwrite to replace it)");
  RA_CHECK(rc == 0, io, ctx, ": cannot rename '", temp, "' to it: ", std::strerror(errno));
  // Make the rename itself durable (best effort: not every filesystem can).
  const int fd = ::open(directory_of(target).c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

std::string future_path(const std::string& path) {
  std::error_code ec;
  const auto p = std::filesystem::weakly_canonical(std::filesystem::absolute(path, ec), ec);
  return ec ? path : p.string();
}

}  // namespace ringattn
