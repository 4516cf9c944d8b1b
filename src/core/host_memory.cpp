// MemAvailable and the cgroup's limit (see host_memory.hpp).
#include "core/host_memory.hpp"

#include <algorithm>
#include <climits>
#include <fstream>
#include <sstream>
#include <string>

namespace ringattn {
namespace {

// Value of "Key:   123 kB" in /proc/meminfo, in bytes; -1 when absent.
std::int64_t meminfo_bytes(const char* key) {
  std::ifstream f("/proc/meminfo");
  std::string line;
  const std::string want = std::string(key) + ":";
  while (std::getline(f, line)) {
    if (line.compare(0, want.size(), want) != 0) continue;
    std::istringstream is(line.substr(want.size()));
    long long kb = -1;
    is >> kb;
    return kb >= 0 && kb < LLONG_MAX / 1024 ? static_cast<std::int64_t>(kb) * 1024 : -1;
  }
  return -1;
}

// First number in a file (cgroup files); -1 when missing or "max".
std::int64_t file_number(const char* path) {
  std::ifstream f(path);
  long long v = -1;
  if (!(f >> v)) return -1;
  return v;
}

// What the cgroup lets this process still allocate; -1 when no limit is set.
std::int64_t cgroup_headroom() {
  // cgroup v2, then v1 (where "no limit" is a huge number).
  std::int64_t limit = file_number("/sys/fs/cgroup/memory.max");
  std::int64_t used = file_number("/sys/fs/cgroup/memory.current");
  if (limit < 0) {
    limit = file_number("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    used = file_number("/sys/fs/cgroup/memory/memory.usage_in_bytes");
    if (limit >= (std::int64_t{1} << 60)) limit = -1;
  }
  if (limit < 0) return -1;
  return std::max<std::int64_t>(0, limit - std::max<std::int64_t>(used, 0));
}

}  // namespace

std::int64_t available_memory_bytes() {
  std::int64_t avail = meminfo_bytes("MemAvailable");
  const std::int64_t cg = cgroup_headroom();
  if (cg >= 0) avail = avail < 0 ? cg : std::min(avail, cg);
  return avail;
}

}  // namespace ringattn
