// stat() and realpath() behind FileIdentity (see file_identity.hpp).
#include "io/file_identity.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

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

  if (::stat(path.c_str(), &st) == 0) {
    RA_CHECK(!S_ISDIR(st.st_mode), usage, ctx, ": is a directory");
    if (!input_path.empty() && ::access(input_path.c_str(), F_OK) == 0)
      RA_CHECK(!same_file(file_identity(path), file_identity(input_path)), usage, ctx,
               ": is the input file '", input_path, "'; choose another path");
    RA_CHECK(overwrite, usage, ctx, ": exists; set overwrite (--overwrite) to replace it");
  }

  // The leading dot keeps the temporary file out of globs.
  std::random_device rd;
  std::ostringstream tmp;
  tmp << dir << "/." << name << ".tmp-" << ::getpid() << '-' << std::hex
      << (static_cast<std::uint64_t>(rd()) << 32 ^ rd() ^
          static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  return tmp.str();
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
