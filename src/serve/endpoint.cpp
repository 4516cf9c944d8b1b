// Where the service listens, and what requests may touch (see endpoint.hpp).
#include "serve/endpoint.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/error.hpp"

namespace ringattn::serve {
namespace fs = std::filesystem;

std::string default_socket_path() {
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg && *xdg && fs::is_directory(xdg))
    return std::string(xdg) + "/ringattn/sock";
  return "/tmp/ringattn-" + std::to_string(::getuid()) + "/sock";
}

std::string resolve_data_path(const std::string& data_dir, const std::string& path) {
  RA_CHECK(!path.empty(), usage, "an empty path");
  std::error_code ec;
  const fs::path root = fs::weakly_canonical(fs::absolute(data_dir), ec);
  RA_CHECK(!ec, usage, "the data directory '", data_dir, "' cannot be resolved");
  fs::path p(path);
  if (p.is_relative()) p = root / p;
  const fs::path real = fs::weakly_canonical(p, ec);
  RA_CHECK(!ec, usage, "path '", path, "' cannot be resolved");
  const std::string r = root.string(), s = real.string();
  const bool inside = s.size() > r.size() && s.compare(0, r.size(), r) == 0 &&
                      (r.back() == '/' || s[r.size()] == '/');
  RA_CHECK(inside, usage, "path '", path, "' leads outside the service's data directory ", r);
  return s;
}

bool is_loopback(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "[::1]" || host == "::1";
}

std::string read_secret_file(const std::string& file, std::size_t min_length) {
  struct stat st {};
  RA_CHECK(::stat(file.c_str(), &st) == 0, usage, "secret file '", file, "' cannot be read");
  RA_CHECK(st.st_uid == ::getuid() && (st.st_mode & 077) == 0, usage, "secret file '", file,
           "' must be owned by you and mode 0600 (chmod 600 ", file, ")");
  std::ifstream in(file, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  RA_CHECK(s.size() >= min_length, usage, "secret file '", file, "' must hold at least ",
           min_length, " characters");
  return s;
}

bool secret_matches(const std::string& want, const std::string& got) {
  unsigned char diff = want.size() == got.size() ? 0 : 1;
  for (std::size_t i = 0; i < want.size(); ++i)
    diff |= static_cast<unsigned char>(want[i] ^ (i < got.size() ? got[i] : 0));
  return diff == 0;
}

void prepare_socket(const std::string& path) {
  RA_CHECK(path.size() < sizeof(sockaddr_un{}.sun_path), usage, "socket path '", path,
           "' is longer than ", sizeof(sockaddr_un{}.sun_path) - 1, " characters");
  const fs::path dir = fs::path(path).parent_path();
  std::error_code ec;
  if (!fs::exists(dir)) {
    RA_CHECK(::mkdir(dir.c_str(), 0700) == 0 || errno == EEXIST, usage,
             "cannot create the socket directory ", dir.string(), ": ", std::strerror(errno));
  }
  struct stat st {};
  RA_CHECK(::lstat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode), usage, "socket directory ",
           dir.string(), " is not a directory");
  RA_CHECK(st.st_uid == ::getuid(), usage, "socket directory ", dir.string(),
           " belongs to another user");
  RA_CHECK((st.st_mode & 077) == 0, usage, "socket directory ", dir.string(),
           " is open to other users (chmod 700 it, or choose another --socket)");
  if (::lstat(path.c_str(), &st) != 0) return;
  RA_CHECK(S_ISSOCK(st.st_mode), usage, "'", path, "' exists and is not a socket");
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  const bool live = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  RA_CHECK(!live, usage, "another service listens on ", path);
  ::unlink(path.c_str());
}

}  // namespace ringattn::serve
