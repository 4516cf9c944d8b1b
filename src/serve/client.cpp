// Client (see client.hpp).
#include "serve/client.hpp"

#include <zmq.h>

#include <chrono>

#include "core/error.hpp"
#include "serve/zmq_socket.hpp"

namespace ringattn::serve {

std::string normalize_endpoint(const std::string& e) {
  if (e.rfind("ipc://", 0) == 0 || e.rfind("tcp://", 0) == 0) return e;
  return "ipc://" + e;
}

struct Client::Impl {
  std::string endpoint, secret;
  int timeout_ms;
  ZmqContext ctx;
  std::unique_ptr<ZmqSocket> sock;
  std::int64_t next_id = 1;

  void open() {
    sock = std::make_unique<ZmqSocket>(ctx, ZMQ_DEALER);
    sock->connect(endpoint);
  }

  Message exchange(const Frames& body, const nlohmann::json& id) {
    Frames f{std::string()};
    f.insert(f.end(), body.begin(), body.end());
    RA_CHECK(sock->send(f), fault, "cannot send to ", endpoint);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (true) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            deadline - std::chrono::steady_clock::now())
                            .count();
      Frames r;
      if (left <= 0 || !sock->recv(r, static_cast<int>(left))) {
        open();  // a late reply must not answer the next request
        RA_FAIL(fault, "no reply from ", endpoint, " within ", timeout_ms / 1000.0, " s");
      }
      RA_CHECK(r.size() >= 2 && r[0].empty(), io, "a malformed reply from ", endpoint);
      r.erase(r.begin());
      Message m = decode_message(std::move(r));
      const nlohmann::json got = m.header.value("id", nlohmann::json());
      if (id.is_null() || got.is_null() || got == id) return m;
      // A reply to an earlier request that timed out: not ours.
    }
  }
};

Client::Client(std::string endpoint, std::string secret, int timeout_ms)
    : impl_(std::make_unique<Impl>()) {
  impl_->endpoint = normalize_endpoint(endpoint);
  impl_->secret = std::move(secret);
  impl_->timeout_ms = timeout_ms;
  impl_->open();
}

Client::~Client() = default;

Message Client::request(Message msg) {
  if (!impl_->secret.empty()) msg.header["secret"] = impl_->secret;
  if (!msg.header.contains("id")) msg.header["id"] = impl_->next_id++;
  const nlohmann::json id = msg.header["id"];
  return impl_->exchange(encode_message(msg), id);
}

Message Client::request_frames(const std::vector<std::string>& frames) {
  return impl_->exchange(frames, nlohmann::json());
}

Message Client::call(Message msg) {
  Message r = request(std::move(msg));
  if (r.header.value("ok", false)) return r;
  const std::string cls = r.header.value("class", std::string("internal"));
  const std::string text = r.header.value("error", std::string("(no message)"));
  for (ErrorClass c :
       {ErrorClass::usage, ErrorClass::input, ErrorClass::io, ErrorClass::comm, ErrorClass::fault})
    if (cls == error_class_name(c)) throw Error(c, text);
  throw Error(cls == "busy" || cls == "denied" ? ErrorClass::usage : ErrorClass::internal,
              cls + ": " + text);
}

}  // namespace ringattn::serve
