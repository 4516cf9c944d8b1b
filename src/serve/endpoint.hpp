// Where the service listens and what requests may touch: the Unix socket's
// directory and mode, the TCP secret, and paths kept inside the data
// directory. The server and the clients share these rules.
//
// Includes: <string>.
#pragma once
#include <cstddef>
#include <string>

namespace ringattn::serve {

// $XDG_RUNTIME_DIR/ringattn/sock when that directory exists, else
// /tmp/ringattn-<uid>/sock.
std::string default_socket_path();

// `path` (absolute, or relative to data_dir) with symbolic links resolved,
// or Error(usage) when it leads outside data_dir.
std::string resolve_data_path(const std::string& data_dir, const std::string& path);

// 127.0.0.1, localhost or ::1.
bool is_loopback(const std::string& host);

// The text of a secret file (trailing newline dropped): refused unless the
// user owns it, others cannot read it (0600), and it holds min_length
// characters or more.
std::string read_secret_file(const std::string& path, std::size_t min_length = 1);

// Compares in time that depends on the secret's length only.
bool secret_matches(const std::string& want, const std::string& got);

// Makes the socket's directory 0700 when missing; refuses one another user
// owns or others may enter, and a socket a live service answers on; removes
// a stale one (libzmq would silently replace it, stealing a running
// service's address).
void prepare_socket(const std::string& path);

}  // namespace ringattn::serve
