// broadcast_command (see command.hpp).
#include "serve/command.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <thread>

#include "comm/watchdog.hpp"
#include "core/error.hpp"

namespace ringattn::serve {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

void bcast_bytes(MPI_Comm comm, char* data, std::size_t n) {
  constexpr std::size_t kPiece = std::size_t{1} << 30;  // MPI counts are int
  for (std::size_t off = 0; off < n; off += kPiece)
    RA_MPI_CHECK(
        MPI_Bcast(data + off, static_cast<int>(std::min(kPiece, n - off)), MPI_BYTE, 0, comm));
}

}  // namespace

void broadcast_command(MPI_Comm comm, bool root, Command& cmd) {
  std::int64_t sizes[2] = {0, 0};
  std::string text;
  if (root) {
    text = cmd.head.dump();
    sizes[0] = static_cast<std::int64_t>(text.size());
    sizes[1] = static_cast<std::int64_t>(cmd.blob.size());
  }
  // Only the root is watched from the start: the others may wait idle for
  // as long as no request comes.
  std::optional<CommWatch> watch;
  if (root) watch.emplace("the service's command broadcast");
  MPI_Request req;
  RA_MPI_CHECK(MPI_Ibcast(sizes, 2, MPI_INT64_T, 0, comm, &req));
  const auto t0 = Clock::now();
  for (int flag = 0; !flag;) {
    RA_MPI_CHECK(MPI_Test(&req, &flag, MPI_STATUS_IGNORE));
    if (flag) break;
    // Spin briefly (a busy service's next command comes soon), then sleep:
    // an idle service must not burn the cores other jobs share.
    const double idle = std::chrono::duration<double>(Clock::now() - t0).count();
    if (idle > 0.005)
      std::this_thread::sleep_for(std::chrono::microseconds(idle > 0.1 ? 1000 : 100));
  }
  if (!root) watch.emplace("the service's command broadcast");
  text.resize(static_cast<std::size_t>(sizes[0]));
  bcast_bytes(comm, text.data(), text.size());
  if (!root) {
    cmd.head = json::parse(text);
    cmd.blob.resize(static_cast<std::size_t>(sizes[1]));
  }
  bcast_bytes(comm, cmd.blob.data(), cmd.blob.size());
}

}  // namespace ringattn::serve
