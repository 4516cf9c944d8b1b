// RAII over the libzmq C API: a context, a socket, multipart messages. The
// service and its C++ client are the only users; one class, so no caller
// touches zmq_msg_t or forgets a close. A message is received whole or not at
// all (ZeroMQ never delivers half a multipart message), which is what makes a
// client dying mid-send harmless.
//
// Includes: <string>, <vector> (no zmq.h: the handles are void*).
#pragma once
#include <string>
#include <vector>

namespace ringattn::serve {

using Frames = std::vector<std::string>;

class ZmqContext {
 public:
  ZmqContext();
  ~ZmqContext();
  ZmqContext(const ZmqContext&) = delete;
  ZmqContext& operator=(const ZmqContext&) = delete;
  void* get() const { return ctx_; }

 private:
  void* ctx_ = nullptr;
};

class ZmqSocket {
 public:
  // type: ZMQ_ROUTER, ZMQ_DEALER, ... (ints from zmq.h).
  ZmqSocket(ZmqContext& ctx, int type);
  ~ZmqSocket();
  ZmqSocket(const ZmqSocket&) = delete;
  ZmqSocket& operator=(const ZmqSocket&) = delete;
  void* get() const { return s_; }

  void set_int(int option, int value);
  void bind(const std::string& endpoint);
  void connect(const std::string& endpoint);
  // Sends the frames as one multipart message. False when it could not be
  // queued within the socket's send timeout (a ROUTER drops replies to a
  // peer that left: that is not an error).
  bool send(const Frames& frames);
  // Waits up to timeout_ms (-1: forever) for a message; false on timeout.
  // A message larger than max_bytes in total is drained and returned as
  // {} with *oversized set, never held whole in memory.
  bool recv(Frames& out, int timeout_ms, std::size_t max_bytes = static_cast<std::size_t>(-1),
            bool* oversized = nullptr);
  // Whether a message is waiting, within timeout_ms.
  bool poll_in(int timeout_ms);
  void close();

 private:
  void* s_ = nullptr;
};

// libzmq's version, "4.3.4".
std::string zmq_version_text();

}  // namespace ringattn::serve
