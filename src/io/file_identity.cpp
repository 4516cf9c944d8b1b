// stat() and realpath() behind FileIdentity (see file_identity.hpp).
#include "io/file_identity.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

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

}  // namespace ringattn
