// The output's writer lock (see writer_lock.hpp).
#include "io/writer_lock.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <utility>

#include "core/error.hpp"
#include "io/file_identity.hpp"

namespace ringattn {
namespace {

// What the holder wrote into the lock file, for the refusal's text.
std::string holder_of(int fd) {
  char buf[256] = {};
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  std::string s = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s.empty() ? "a run that has not yet said who it is" : s;
}

void write_holder(int fd) {
  char host[256] = "?";
  ::gethostname(host, sizeof host - 1);
  const std::time_t now = std::time(nullptr);
  char when[32] = "?";
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", std::localtime(&now));
  char text[400];
  const int n = std::snprintf(text, sizeof text, "pid %ld on %s since %s\n",
                              static_cast<long>(::getpid()), host, when);
  // Best effort: the lock holds whether or not the note could be written.
  if (::ftruncate(fd, 0) == 0 && n > 0) (void)!::pwrite(fd, text, static_cast<std::size_t>(n), 0);
}

bool locks_unsupported(int err) {
  return err == ENOLCK || err == EOPNOTSUPP || err == ENOSYS || err == EINVAL;
}

}  // namespace

std::string writer_lock_path(const std::string& target) {
  return hidden_sibling(target, ".lock");
}

WriterLock WriterLock::acquire(const std::string& target, const std::string& ctx) {
  const std::string path = writer_lock_path(target);
  // A few rounds: each lost race means a holder removed the file under us.
  for (int attempt = 0; attempt < 16; ++attempt) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
      const int err = errno;
      RA_CHECK(err != ELOOP, usage, ctx, ": its lock file '", path,
               "' is a symbolic link; remove it");
      RA_CHECK(false, io, ctx, ": cannot create its lock file '", path, "': ", std::strerror(err));
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      RA_CHECK(false, usage, ctx, ": its lock file '", path, "' is not a regular file; remove it");
    }
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (::fcntl(fd, F_OFD_SETLK, &fl) != 0) {
      const int err = errno;
      if (locks_unsupported(err)) {
        ::close(fd);
        std::fprintf(stderr,
                     "ringattn: warning: %s: this filesystem cannot lock '%s' (%s); a second run "
                     "on the same output would not be refused\n",
                     ctx.c_str(), path.c_str(), std::strerror(err));
        return WriterLock{};
      }
      const std::string holder = holder_of(fd);
      ::close(fd);
      RA_CHECK(err == EAGAIN || err == EACCES, io, ctx, ": cannot lock '", path,
               "': ", std::strerror(err));
      RA_CHECK(false, usage, ctx, ": another run is writing it (", holder, " holds '", path,
               "'); wait for it to end, or write elsewhere");
    }
    struct stat named {};
    if (::stat(path.c_str(), &named) == 0 && named.st_dev == st.st_dev &&
        named.st_ino == st.st_ino) {
      write_holder(fd);
      WriterLock lock;
      lock.fd_ = fd;
      lock.path_ = path;
      return lock;
    }
    ::close(fd);  // the holder removed this file after we opened it: try the new one
  }
  RA_CHECK(false, io, ctx, ": its lock file '", path, "' keeps being replaced; giving up");
}

WriterLock::WriterLock(WriterLock&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)), path_(std::move(o.path_)) {}

WriterLock& WriterLock::operator=(WriterLock&& o) noexcept {
  if (this != &o) {
    release();
    fd_ = std::exchange(o.fd_, -1);
    path_ = std::move(o.path_);
  }
  return *this;
}

void WriterLock::release() noexcept {
  if (fd_ < 0) return;
  // Unlink while still holding: a waiting taker then finds a new inode.
  ::unlink(path_.c_str());
  ::close(std::exchange(fd_, -1));
}

}  // namespace ringattn
