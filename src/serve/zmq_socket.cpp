// ZmqContext, ZmqSocket (see zmq_socket.hpp).
#include "serve/zmq_socket.hpp"

#include <zmq.h>

#include <cerrno>

#include "core/error.hpp"

namespace ringattn::serve {
namespace {

[[noreturn]] void fail(const char* what) {
  RA_FAIL(io, what, ": ", zmq_strerror(zmq_errno()));
}

}  // namespace

ZmqContext::ZmqContext() : ctx_(zmq_ctx_new()) {
  if (!ctx_) fail("zmq_ctx_new");
}

ZmqContext::~ZmqContext() {
  if (ctx_) zmq_ctx_term(ctx_);
}

ZmqSocket::ZmqSocket(ZmqContext& ctx, int type) : s_(zmq_socket(ctx.get(), type)) {
  if (!s_) fail("zmq_socket");
  set_int(ZMQ_LINGER, 0);
}

ZmqSocket::~ZmqSocket() {
  close();
}

void ZmqSocket::close() {
  if (s_) zmq_close(s_);
  s_ = nullptr;
}

void ZmqSocket::set_int(int option, int value) {
  if (zmq_setsockopt(s_, option, &value, sizeof value) != 0) fail("zmq_setsockopt");
}

void ZmqSocket::bind(const std::string& endpoint) {
  if (zmq_bind(s_, endpoint.c_str()) != 0)
    RA_FAIL(usage, "cannot listen on ", endpoint, ": ", zmq_strerror(zmq_errno()));
}

void ZmqSocket::connect(const std::string& endpoint) {
  if (zmq_connect(s_, endpoint.c_str()) != 0)
    RA_FAIL(usage, "cannot connect to ", endpoint, ": ", zmq_strerror(zmq_errno()));
}

bool ZmqSocket::send(const Frames& frames) {
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const int flags = i + 1 < frames.size() ? ZMQ_SNDMORE : 0;
    while (zmq_send(s_, frames[i].data(), frames[i].size(), flags) < 0) {
      if (zmq_errno() == EINTR) continue;
      if (zmq_errno() == EAGAIN || zmq_errno() == EHOSTUNREACH) return false;
      fail("zmq_send");
    }
  }
  return true;
}

bool ZmqSocket::poll_in(int timeout_ms) {
  zmq_pollitem_t item{s_, 0, ZMQ_POLLIN, 0};
  const int rc = zmq_poll(&item, 1, timeout_ms);
  if (rc < 0) {
    if (zmq_errno() == EINTR) return false;
    fail("zmq_poll");
  }
  return rc > 0;
}

bool ZmqSocket::recv(Frames& out, int timeout_ms, std::size_t max_bytes, bool* oversized) {
  out.clear();
  if (oversized) *oversized = false;
  if (!poll_in(timeout_ms)) return false;
  std::size_t total = 0;
  bool too_big = false;
  int more = 1;
  while (more) {
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    while (zmq_msg_recv(&msg, s_, 0) < 0) {
      if (zmq_errno() == EINTR) continue;
      zmq_msg_close(&msg);
      fail("zmq_msg_recv");
    }
    total += zmq_msg_size(&msg);
    if (total > max_bytes) too_big = true;
    if (!too_big || out.size() < 1)  // keep the routing frame of an oversized request
      out.emplace_back(static_cast<const char*>(zmq_msg_data(&msg)), zmq_msg_size(&msg));
    more = zmq_msg_more(&msg);
    zmq_msg_close(&msg);
  }
  if (too_big && oversized) *oversized = true;
  return true;
}

std::string zmq_version_text() {
  int major = 0, minor = 0, patch = 0;
  zmq_version(&major, &minor, &patch);
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

}  // namespace ringattn::serve
