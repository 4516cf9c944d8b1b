// The C++ client of the service (the tests and `ringattn submit`/`query`
// use it): one DEALER socket, one request at a time, a deadline per reply.
// After a timeout the socket is replaced, so a late reply is never taken
// for the next one.
//
// Includes: serve/protocol.hpp.
#pragma once
#include <memory>
#include <string>

#include "serve/protocol.hpp"

namespace ringattn::serve {

class Client {
 public:
  // endpoint: "ipc://PATH", "tcp://HOST:PORT", or a plain path (a Unix socket).
  explicit Client(std::string endpoint, std::string secret = "", int timeout_ms = 30000);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends msg and waits for its reply (header["ok"] tells success). Throws
  // Error(fault) when no reply came within the timeout.
  Message request(Message msg);
  // The same for frames sent as they are (after the empty delimiter): tests
  // send malformed requests with it.
  Message request_frames(const std::vector<std::string>& frames);
  // request(), then Error(usage/input/io/...) when the reply is an error.
  Message call(Message msg);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// "ipc://" + path for a plain path; an endpoint as it is.
std::string normalize_endpoint(const std::string& e);

}  // namespace ringattn::serve
