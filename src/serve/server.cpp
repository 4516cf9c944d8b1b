// The attention service (see server.hpp and docs/service.md).
#include "serve/server.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "comm/agree.hpp"
#include "comm/watchdog.hpp"
#include "core/error.hpp"
#include "core/shape.hpp"
#include "core/version.hpp"
#include "core/visibility.hpp"
#include "job/config_toml.hpp"
#include "job/job.hpp"
#include "job/metrics.hpp"
#include "job/progress.hpp"
#include "job/stop_request.hpp"
#include "serve/attend.hpp"
#include "serve/command.hpp"
#include "serve/context_file.hpp"
#include "serve/context_store.hpp"
#include "serve/endpoint.hpp"
#include "serve/protocol.hpp"
#include "serve/zmq_socket.hpp"

namespace ringattn::serve {
namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

// ---- where the service listens, and what it lets requests touch ---------------

std::string endpoint_of(const ServeOptions& o) {
  if (!o.tcp.empty()) return "tcp://" + o.tcp;
  return "ipc://" + (o.socket.empty() ? default_socket_path() : o.socket);
}

namespace {

// ---- the state the front door and the executor share (rank 0) -----------------

struct Request {
  std::string identity;  // ZeroMQ routing id ("" for internal work: a job)
  Message msg;
  std::string op;
  Clock::time_point arrived;
};

struct JobRecord {
  std::string state = "queued";  // queued, running, done, failed, stopped, cancelled
  std::string error;
  json report;
  double done_chunks = 0;
  std::int64_t chunks = 0;
  std::string config;  // TOML text as it will run (paths resolved)
};

struct Shared {
  std::mutex mu;
  std::condition_variable work;
  std::deque<Request> queue;
  std::deque<std::pair<std::string, Message>> replies;
  int wake[2] = {-1, -1};  // executor -> front door: replies are waiting
  bool stopping = false;   // a stop signal came: no new work
  bool done = false;       // the executor has finished: send what is left and leave
  // Taken by the executor, not yet answered: (routing id, request id).
  std::vector<std::pair<std::string, json>> in_flight;
  json contexts = json::array();
  std::map<std::int64_t, JobRecord> jobs;
  std::int64_t next_job = 1;
  std::int64_t requests = 0, batches = 0, attend_rows = 0;
};

void push_reply(Shared& sh, std::string identity, Message m) {
  if (identity.empty()) return;
  {
    std::lock_guard<std::mutex> lock(sh.mu);
    sh.replies.emplace_back(std::move(identity), std::move(m));
  }
  const char b = 1;
  [[maybe_unused]] const auto n = ::write(sh.wake[1], &b, 1);
}

void send_reply(ZmqSocket& sock, const std::string& identity, const json& id, Message m) {
  if (!id.is_null()) m.header["id"] = id;
  Frames f{identity, std::string()};
  for (std::string& s : encode_message(m)) f.push_back(std::move(s));
  sock.send(f);
}

// The service is ending on a fault: every request taken or waiting gets an
// error reply (class fault) instead of silence; the front door sends them and
// leaves.
void fail_all(Shared& sh, const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(sh.mu);
    auto fail = [&](const std::string& identity, const json& id) {
      if (identity.empty()) return;
      Message m = error_reply("fault", why);
      if (!id.is_null()) m.header["id"] = id;
      sh.replies.emplace_back(identity, std::move(m));
    };
    for (const auto& [identity, id] : sh.in_flight) fail(identity, id);
    for (const Request& r : sh.queue) fail(r.identity, r.msg.header.value("id", json()));
    sh.in_flight.clear();
    sh.queue.clear();
    sh.stopping = true;
    sh.done = true;
  }
  const char b = 1;
  [[maybe_unused]] const auto n = ::write(sh.wake[1], &b, 1);
}

// While a service runs on rank 0: its shared state and the abort handler it
// replaced (the CLI's), so a job-ending fault (the watchdog, a rank failing
// alone in a collective) answers the clients before the job ends.
std::atomic<Shared*> g_live{nullptr};
JobAbortHandler g_next_handler = nullptr;

void answer_then_abort(const JobAbort& how) {
  if (Shared* sh = g_live.exchange(nullptr)) {
    fail_all(*sh, "the service is ending: a rank failed or timed out (see the service's log)");
    // The front door sends the replies within its next poll.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  if (g_next_handler) g_next_handler(how);
}

// This process's resident memory in MB (/proc/self/statm), for status.
double resident_mb() {
  std::ifstream in("/proc/self/statm");
  long pages = 0, resident = 0;
  in >> pages >> resident;
  return static_cast<double>(resident) * static_cast<double>(::sysconf(_SC_PAGESIZE)) / 1048576.0;
}

bool known_op(const std::string& op) {
  static const char* ops[] = {"ping", "create", "load",   "append", "drop",
                              "list", "status", "attend", "job",    "job_status"};
  return std::any_of(std::begin(ops), std::end(ops), [&](const char* o) { return op == o; });
}

// A TOML run config as the service will run it: every path resolved inside
// the data directory, so a job reads and writes only where the service may.
std::string job_config_text(const ServeOptions& o, const std::string& text) {
  JobConfig cfg;
  load_config_text(text, "job config", cfg);
  RA_CHECK(!cfg.input.empty() && !cfg.output.empty(), usage,
           "job config: [input] path and [output] path are needed");
  cfg.input = resolve_data_path(o.data_dir, cfg.input);
  cfg.output = resolve_data_path(o.data_dir, cfg.output);
  if (!cfg.metrics.empty()) cfg.metrics = resolve_data_path(o.data_dir, cfg.metrics);
  return config_toml(cfg);
}

class FrontDoor {
 public:
  FrontDoor(const ServeOptions& o, Shared& sh, int ranks)
      : opt_(o), sh_(sh), ranks_(ranks), sock_(ctx_, ZMQ_ROUTER) {
    endpoint_ = endpoint_of(o);
    if (!o.tcp.empty()) {
      const std::string host = o.tcp.substr(0, o.tcp.rfind(':'));
      RA_CHECK(o.tcp.find(':') != std::string::npos, usage, "--tcp wants HOST:PORT");
      RA_CHECK(is_loopback(host) || !o.secret_file.empty(), usage, "--tcp ", o.tcp,
               " listens beyond this machine: give --secret-file too");
    }
    if (!o.secret_file.empty()) secret_ = read_secret_file(o.secret_file, 16);
    const std::int64_t frame_limit = (o.max_request_mb + 1) << 20;
    RA_CHECK(zmq_setsockopt(sock_.get(), ZMQ_MAXMSGSIZE, &frame_limit, sizeof frame_limit) == 0, io,
             "zmq_setsockopt(ZMQ_MAXMSGSIZE) failed");
    sock_.set_int(ZMQ_SNDTIMEO, 1000);  // a reply to a peer that stopped reading is dropped
    sock_.set_int(ZMQ_ROUTER_MANDATORY, 0);
    if (o.tcp.empty()) {
      const std::string path = endpoint_.substr(6);
      prepare_socket(path);
      sock_.bind(endpoint_);
      RA_CHECK(::chmod(path.c_str(), 0600) == 0, io, "cannot chmod 0600 ", path);
    } else {
      sock_.bind(endpoint_);
    }
  }

  const std::string& endpoint() const { return endpoint_; }

  void run() {
    started_ = Clock::now();
    std::vector<zmq_pollitem_t> items{{sock_.get(), 0, ZMQ_POLLIN, 0},
                                      {nullptr, sh_.wake[0], ZMQ_POLLIN, 0}};
    while (true) {
      bool finished = false;
      send_pending(finished);
      if (finished) break;
      if (stop_signal_received() && !stopping_) {
        stopping_ = true;
        std::lock_guard<std::mutex> lock(sh_.mu);
        sh_.stopping = true;
        sh_.work.notify_all();
      }
      const int rc = zmq_poll(items.data(), 2, 50);
      if (rc < 0) continue;  // EINTR: a signal
      if (items[1].revents & ZMQ_POLLIN) {
        char buf[256];
        [[maybe_unused]] const auto n = ::read(sh_.wake[0], buf, sizeof buf);
      }
      if (items[0].revents & ZMQ_POLLIN) receive();
    }
    sock_.set_int(ZMQ_LINGER, 2000);  // replies already queued still leave
    sock_.close();
  }

 private:
  void send_pending(bool& finished) {
    std::deque<std::pair<std::string, Message>> out;
    {
      std::lock_guard<std::mutex> lock(sh_.mu);
      out.swap(sh_.replies);
      finished = sh_.done && out.empty();
    }
    for (auto& [identity, m] : out) send_reply(sock_, identity, m.header.value("id", json()), m);
  }

  void receive() {
    Frames f;
    bool oversized = false;
    const std::size_t limit = static_cast<std::size_t>(opt_.max_request_mb) << 20;
    if (!sock_.recv(f, 0, limit, &oversized) || f.empty()) return;
    const std::string identity = f[0];
    std::optional<Message> m = admit(identity, std::move(f), oversized);
    if (m) dispatch(identity, std::move(*m));
  }

  // The message a request's frames hold, or nullopt after replying why there
  // is none (too large, no delimiter, a header that does not describe its
  // frames, a wrong secret).
  std::optional<Message> admit(const std::string& identity, Frames f, bool oversized) {
    if (oversized) {
      reply(identity, json(),
            error_reply("usage", "request larger than --max-request-mb " +
                                     std::to_string(opt_.max_request_mb) + " MB refused"));
      return std::nullopt;
    }
    if (f.size() < 3 || !f[1].empty()) {
      reply(identity, json(),
            error_reply("usage", "a request is [empty frame, JSON header, arrays...]"));
      return std::nullopt;
    }
    Message m;
    try {
      f.erase(f.begin(), f.begin() + 2);
      m = decode_message(std::move(f));
    } catch (const Error& e) {
      reply(identity, json(), error_reply(e));
      return std::nullopt;
    }
    if (!secret_.empty()) {
      const auto it = m.header.find("secret");
      const bool ok = it != m.header.end() && it->is_string() &&
                      secret_matches(secret_, it->get<std::string>());
      if (!ok) {
        reply(identity, m.header.value("id", json()),
              error_reply("denied", "a wrong or missing secret"));
        return std::nullopt;
      }
    }
    m.header.erase("secret");
    return m;
  }

  // Answers here, queues, or refuses (busy, shutting down, a bad job).
  void dispatch(const std::string& identity, Message m) {
    const json id = m.header.value("id", json());
    const std::string op = m.header.value("op", json("")).is_string()
                               ? m.header.value("op", std::string())
                               : std::string();
    try {
      RA_CHECK(known_op(op), usage, "unknown op '", op,
               "' (ping, create, load, append, drop, list, status, attend, job, job_status)");
      if (op == "ping" || op == "list" || op == "status" || op == "job_status") {
        reply(identity, id, answer_here(op, m.header));
        return;
      }
      std::lock_guard<std::mutex> lock(sh_.mu);
      if (sh_.stopping) {
        reply(identity, id, error_reply("busy", "the service is shutting down"));
        return;
      }
      if (static_cast<int>(sh_.queue.size()) >= opt_.queue) {
        reply(identity, id,
              error_reply("busy", "the queue is full (" + std::to_string(opt_.queue) +
                                      " requests waiting): retry later"));
        return;
      }
      if (op == "job") {
        // Checked and answered here; the run itself waits its turn.
        JobRecord rec;
        rec.config = job_config_text(opt_, field_string(m.header, "config"));
        const std::int64_t job = sh_.next_job++;
        sh_.jobs[job] = rec;
        Request r{std::string(), Message{}, "job", Clock::now()};
        r.msg.header = {{"op", "job"}, {"job", job}};
        sh_.queue.push_back(std::move(r));
        sh_.work.notify_all();
        reply(identity, id, ok_reply({{"job", job}}));
        return;
      }
      sh_.queue.push_back(Request{identity, std::move(m), op, Clock::now()});
      sh_.work.notify_all();
    } catch (const Error& e) {
      reply(identity, id, error_reply(e));
    }
  }

  Message answer_here(const std::string& op, const json& h) {
    std::lock_guard<std::mutex> lock(sh_.mu);
    if (op == "ping")
      return ok_reply({{"version", kVersion}, {"ranks", ranks_}, {"zmq", zmq_version_text()}});
    if (op == "list") return ok_reply({{"contexts", sh_.contexts}});
    if (op == "status") {
      json jobs = {{"queued", 0}, {"running", 0}, {"done", 0}, {"failed", 0}};
      for (const auto& [k, j] : sh_.jobs) jobs[j.state] = jobs.value(j.state, 0) + 1;
      const double up = std::chrono::duration<double>(Clock::now() - started_).count();
      return ok_reply({{"uptime_s", up},
                       {"ranks", ranks_},
                       {"threads", opt_.threads},
                       {"page_tokens", opt_.page_tokens},
                       {"queue", {{"depth", sh_.queue.size()}, {"limit", opt_.queue}}},
                       {"contexts", sh_.contexts.size()},
                       {"requests", sh_.requests},
                       {"batches", sh_.batches},
                       {"attend_rows", sh_.attend_rows},
                       {"jobs", jobs},
                       {"rss_mb", resident_mb()},
                       {"stopping", sh_.stopping}});
    }
    // job_status
    const std::int64_t job = field_int(h, "job");
    const auto it = sh_.jobs.find(job);
    RA_CHECK(it != sh_.jobs.end(), usage, "no job ", job);
    json r = {{"job", job}, {"state", it->second.state}};
    if (!it->second.error.empty()) r["error"] = it->second.error;
    if (!it->second.report.is_null()) r["report"] = it->second.report;
    if (it->second.chunks > 0)
      r["progress"] = {{"chunks_done", it->second.done_chunks}, {"chunks", it->second.chunks}};
    return ok_reply(r);
  }

  void reply(const std::string& identity, const json& id, Message m) {
    send_reply(sock_, identity, id, std::move(m));
  }

  const ServeOptions& opt_;
  Shared& sh_;
  int ranks_;
  ZmqContext ctx_;
  ZmqSocket sock_;
  std::string endpoint_, secret_;
  bool stopping_ = false;
  Clock::time_point started_ = Clock::now();
};

// ---- commands every rank applies -------------------------------------------------

DType context_dtype(const std::string& s) {
  RA_CHECK(s == "f32" || s == "f16", usage, "a context's dtype is f32 or f16, not '", s, "'");
  return s == "f16" ? DType::f16 : DType::f32;
}

// Checks an array k or v of a context: [H_kv, t, D] (or [1, H_kv, t, D]), the
// context's dtype, finite. Returns t.
std::int64_t check_kv(const Message& m, const char* name, const ContextInfo& c) {
  const WireArray* a = m.array(name);
  RA_CHECK(a, usage, "array '", name, "' is missing");
  std::vector<std::int64_t> s = a->shape;
  if (s.size() == 4 && s[0] == 1) s.erase(s.begin());
  RA_CHECK(s.size() == 3 && s[0] == c.heads_kv && s[2] == c.head_dim, input, "array '", name,
           "' must be [", c.heads_kv, ", tokens, ", c.head_dim, "] for context '", c.name, "'");
  const WireDType want = c.dtype == DType::f16 ? WireDType::f16 : WireDType::f32;
  RA_CHECK(a->dtype == want, input, "array '", name, "' must be ", wire_dtype_name(want),
           " like context '", c.name, "'");
  const std::string bad = first_nonfinite(a->bytes.data(), c.dtype, s[0], s[1], s[2]);
  RA_CHECK(bad.empty(), input, "array '", name, "' has ", bad);
  return s[1];
}

json context_json(const ContextInfo& c, const PageMap& map) {
  json bytes = json::array();
  for (int r = 0; r < map.ranks; ++r)
    bytes.push_back(2 * map.rows_of(r, c.tokens) * c.heads_kv * c.head_dim *
                    static_cast<std::int64_t>(dtype_size(c.dtype)));
  return {{"name", c.name},         {"tokens", c.tokens},           {"heads_kv", c.heads_kv},
          {"head_dim", c.head_dim}, {"dtype", dtype_name(c.dtype)}, {"bytes_per_rank", bytes}};
}

// What rank 0 decided a request becomes, before any rank is involved.
struct Planned {
  Command cmd;
  std::vector<Request> requests;  // answered by this command (an attend batch: several)
  std::vector<std::pair<std::int64_t, std::int64_t>> rows;  // attend: (offset, n) per request
};

class Service {
 public:
  Service(MPI_Comm comm, const ServeOptions& o)
      : comm_(comm),
        opt_(o),
        store_(PageMap{o.page_tokens, size_of(comm)}, rank_of(comm)),
        rank_(rank_of(comm)) {}

  static int rank_of(MPI_Comm c) {
    int r = 0;
    MPI_Comm_rank(c, &r);
    return r;
  }
  static int size_of(MPI_Comm c) {
    int s = 0;
    MPI_Comm_size(c, &s);
    return s;
  }

  void run() {
    Shared sh;
    RA_CHECK(::pipe(sh.wake) == 0, io, "pipe: ", std::strerror(errno));
    for (int fd : sh.wake) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    std::unique_ptr<FrontDoor> door;
    agree(comm_, [&] {
      if (rank_ == 0) door = std::make_unique<FrontDoor>(opt_, sh, store_.map().ranks);
    });
    // Contexts named at start, before the door opens.
    for (const auto& [name, file] : opt_.contexts) {
      if (rank_ == 0) {
        json h = {{"op", "load"}, {"context", name}, {"path", file}};
        Request r{std::string(), Message{}, "load", Clock::now()};
        r.msg.header = h;
        Planned p;
        agree(comm_, [&] { p = plan_load(r, true); });
        Command c = p.cmd;
        broadcast_command(comm_, true, c);
        agree(comm_, [&] { apply(c); });
        publish(sh);
      } else {
        Command c;
        agree(comm_, [] {});
        broadcast_command(comm_, false, c);
        agree(comm_, [&] { apply(c); });
      }
    }
    if (rank_ != 0) {
      worker_loop();
      return;
    }
    publish(sh);
    std::printf("ringattn serve: listening on %s (%d ranks x %d threads, queue %d)\n",
                door->endpoint().c_str(), store_.map().ranks, opt_.threads, opt_.queue);
    std::fflush(stdout);
    std::thread front([&] { door->run(); });
    g_next_handler = job_abort_handler();
    g_live.store(&sh);
    set_job_abort_handler(answer_then_abort);
    try {
      executor_loop(sh);
    } catch (const std::exception& e) {
      // A fault ends the job: the clients hear it first.
      g_live.store(nullptr);
      set_job_abort_handler(g_next_handler);
      fail_all(sh, std::string("the service is ending: ") + e.what());
      front.join();
      throw;
    }
    g_live.store(nullptr);
    set_job_abort_handler(g_next_handler);
    {
      std::lock_guard<std::mutex> lock(sh.mu);
      sh.done = true;
    }
    const char b = 1;
    [[maybe_unused]] const auto n = ::write(sh.wake[1], &b, 1);
    front.join();
    ::close(sh.wake[0]);
    ::close(sh.wake[1]);
  }

 private:
  // ---- rank 0: take requests in order, plan, broadcast, apply, reply ----------
  void executor_loop(Shared& sh) {
    while (true) {
      std::vector<Request> taken;
      bool quit = false;
      {
        std::unique_lock<std::mutex> lock(sh.mu);
        sh.work.wait(lock, [&] { return !sh.queue.empty() || sh.stopping; });
        if (sh.queue.empty()) {
          quit = true;
        } else {
          taken.push_back(std::move(sh.queue.front()));
          sh.queue.pop_front();
          // Consecutive attends against the same context, with the same
          // mask and head count, share one pass over the shard.
          if (taken[0].op == "attend") {
            std::int64_t rows = attend_rows(taken[0]);
            while (!sh.queue.empty() && same_batch(taken[0], sh.queue.front()) &&
                   rows + attend_rows(sh.queue.front()) <= opt_.max_batch_rows) {
              rows += attend_rows(sh.queue.front());
              taken.push_back(std::move(sh.queue.front()));
              sh.queue.pop_front();
            }
          }
        }
      }
      if (quit) {
        Command c;
        c.head = {{"op", "quit"}};
        broadcast_command(comm_, true, c);
        // Jobs that never started will not now.
        std::lock_guard<std::mutex> lock(sh.mu);
        for (auto& [k, j] : sh.jobs)
          if (j.state == "queued") j.state = "cancelled";
        return;
      }
      {
        std::lock_guard<std::mutex> lock(sh.mu);
        for (const Request& r : taken)
          sh.in_flight.emplace_back(r.identity, r.msg.header.value("id", json()));
      }
      serve_one(sh, std::move(taken));
      std::lock_guard<std::mutex> lock(sh.mu);
      sh.in_flight.clear();
    }
  }

  static std::int64_t attend_rows(const Request& r) {
    const WireArray* q = r.msg.array("q");
    return q && q->shape.size() == 3 ? q->shape[1] : 0;
  }

  static bool same_batch(const Request& a, const Request& b) {
    if (b.op != "attend") return false;
    const json &x = a.msg.header, &y = b.msg.header;
    const WireArray *qa = a.msg.array("q"), *qb = b.msg.array("q");
    return qa && qb && qa->shape.size() == 3 && qb->shape.size() == 3 &&
           qa->shape[0] == qb->shape[0] && qa->dtype == qb->dtype &&
           x.value("context", json()) == y.value("context", json()) &&
           x.value("causal", json(false)) == y.value("causal", json(false)) &&
           x.value("window", json("none")) == y.value("window", json("none"));
  }

  void serve_one(Shared& sh, std::vector<Request> taken) {
    // Plan on rank 0 alone: a request refused here never reaches the others.
    Planned plan;
    std::vector<Request> valid;
    for (Request& r : taken) {
      try {
        if (r.op == "attend") {
          check_attend(r);
          valid.push_back(std::move(r));
        } else {
          plan = plan_single(sh, r);
          plan.requests.push_back(std::move(r));
        }
      } catch (const Error& e) {
        push_reply(sh, r.identity, with_id(error_reply(e), r));
        finish_job_if(sh, r, "failed", e.what());
      }
    }
    if (!valid.empty()) plan = plan_attend(std::move(valid));
    if (plan.requests.empty()) return;
    broadcast_command(comm_, true, plan.cmd);
    const std::string op = plan.cmd.head["op"];
    try {
      if (op == "job") {
        run_job_command(sh, plan);
        return;
      }
      // Watched: a rank that hangs ends the service within the comm timeout
      // (and the clients hear it) instead of leaving everyone waiting.
      CommWatch watch("a '" + op + "' request on all ranks");
      std::vector<float> rows;
      agree(comm_, [&] { rows = apply(plan.cmd); });
      if (op == "attend") {
        reduce_rows(plan.cmd, rows);
        answer_attend(sh, plan, rows);
      } else {
        publish(sh);
        json fields = json::object();
        if (op != "drop") fields["tokens"] = store_.find(plan.cmd.head["context"])->info().tokens;
        push_reply(sh, plan.requests[0].identity, with_id(ok_reply(fields), plan.requests[0]));
      }
    } catch (const Error& e) {
      if (e.error_class() == ErrorClass::comm || e.error_class() == ErrorClass::fault) throw;
      for (const Request& r : plan.requests) push_reply(sh, r.identity, with_id(error_reply(e), r));
    }
    std::lock_guard<std::mutex> lock(sh.mu);
    sh.requests += static_cast<std::int64_t>(plan.requests.size());
    sh.batches += 1;
  }

  static Message with_id(Message m, const Request& r) {
    const json id = r.msg.header.value("id", json());
    if (!id.is_null()) m.header["id"] = id;
    return m;
  }

  void finish_job_if(Shared& sh, const Request& r, const char* state, const std::string& err) {
    if (r.op != "job") return;
    std::lock_guard<std::mutex> lock(sh.mu);
    JobRecord& j = sh.jobs[r.msg.header["job"].get<std::int64_t>()];
    j.state = state;
    j.error = err;
  }

  Planned plan_single(Shared& sh, const Request& r) {
    const json& h = r.msg.header;
    Planned p;
    if (r.op == "load") return plan_load(r);
    if (r.op == "job") {
      std::lock_guard<std::mutex> lock(sh.mu);
      p.cmd.head = {{"op", "job"},
                    {"job", h["job"]},
                    {"config", sh.jobs[h["job"].get<std::int64_t>()].config}};
      return p;
    }
    const std::string name = field_string(h, "context");
    check_context_name(name);
    if (r.op == "create") {
      RA_CHECK(!store_.find(name), usage, "context '", name, "' exists already");
      ContextInfo c;
      c.name = name;
      c.dtype = context_dtype(optional_string(h, "dtype").value_or("f32"));
      c.heads_kv = field_int(h, "heads_kv");
      c.head_dim = field_int(h, "head_dim");
      RA_CHECK(c.heads_kv >= 1 && c.heads_kv <= 4096, usage, "create: heads_kv must be 1..4096");
      RA_CHECK(c.head_dim >= 1 && c.head_dim <= kMaxHeadDim, usage, "create: head_dim must be 1..",
               kMaxHeadDim);
      std::int64_t t = 0;
      if (r.msg.array("k") || r.msg.array("v")) {
        t = check_kv(r.msg, "k", c);
        RA_CHECK(check_kv(r.msg, "v", c) == t, input, "arrays 'k' and 'v' differ in tokens");
        p.cmd.blob = r.msg.array("k")->bytes + r.msg.array("v")->bytes;
      }
      p.cmd.head = {
          {"op", "create"},         {"context", name},        {"dtype", dtype_name(c.dtype)},
          {"heads_kv", c.heads_kv}, {"head_dim", c.head_dim}, {"tokens", t}};
      return p;
    }
    ContextShard* s = store_.find(name);
    RA_CHECK(s, usage, "no context '", name, "'");
    if (r.op == "drop") {
      p.cmd.head = {{"op", "drop"}, {"context", name}};
      return p;
    }
    // append
    const std::int64_t t = check_kv(r.msg, "k", s->info());
    RA_CHECK(check_kv(r.msg, "v", s->info()) == t, input, "arrays 'k' and 'v' differ in tokens");
    RA_CHECK(s->info().tokens + t <= (std::int64_t{1} << 40), usage, "context too long");
    p.cmd.head = {{"op", "append"}, {"context", name}, {"tokens", t}};
    p.cmd.blob = r.msg.array("k")->bytes + r.msg.array("v")->bytes;
    return p;
  }

  // trusted: the path came from the service's own command line (--context),
  // not from a client, so it may lie outside the data directory.
  Planned plan_load(const Request& r, bool trusted = false) {
    const json& h = r.msg.header;
    const std::string name = field_string(h, "context");
    check_context_name(name);
    RA_CHECK(!store_.find(name), usage, "context '", name, "' exists already");
    const std::string path = trusted ? fs::absolute(field_string(h, "path")).string()
                                     : resolve_data_path(opt_.data_dir, field_string(h, "path"));
    const ContextFile f = describe_context_file(path, optional_string(h, "k").value_or("k"),
                                                optional_string(h, "v").value_or("v"),
                                                optional_int(h, "batch").value_or(0));
    Planned p;
    p.cmd.head = {{"op", "load"}, {"context", name}, {"file", f}};
    return p;
  }

  void check_attend(const Request& r) {
    const json& h = r.msg.header;
    const std::string name = field_string(h, "context");
    ContextShard* s = store_.find(name);
    RA_CHECK(s, usage, "no context '", name, "'");
    const ContextInfo& c = s->info();
    const WireArray* q = r.msg.array("q");
    RA_CHECK(q, usage, "attend: array 'q' is missing");
    RA_CHECK(q->dtype != WireDType::i64, input, "attend: q must be f32 or f16");
    RA_CHECK(q->shape.size() == 3 && q->shape[0] >= 1 && q->shape[0] % c.heads_kv == 0 &&
                 q->shape[2] == c.head_dim,
             input, "attend: q must be [H, n, ", c.head_dim, "] with H a multiple of ", c.heads_kv,
             " for context '", name, "'");
    RA_CHECK(q->shape[1] >= 1 && q->shape[1] <= opt_.max_batch_rows, usage, "attend: n must be 1..",
             opt_.max_batch_rows, " query rows");
    const DType qt = q->dtype == WireDType::f16 ? DType::f16 : DType::f32;
    const std::string bad =
        first_nonfinite(q->bytes.data(), qt, q->shape[0], q->shape[1], c.head_dim);
    RA_CHECK(bad.empty(), input, "attend: q has ", bad);
    const std::int64_t start = optional_int(h, "q_start").value_or(c.tokens);
    RA_CHECK(std::abs(start) <= (std::int64_t{1} << 50), usage, "attend: q_start out of range");
    optional_bool(h, "causal", false);
    if (const auto w = optional_string(h, "window")) Window::parse(*w, "attend: window");
  }

  Planned plan_attend(std::vector<Request> rs) {
    const Request& r0 = rs[0];
    const std::string name = r0.msg.header["context"];
    const ContextInfo& c = store_.find(name)->info();
    const std::int64_t H = r0.msg.array("q")->shape[0], D = c.head_dim;
    std::int64_t N = 0;
    Planned p;
    json segs = json::array();
    for (const Request& r : rs) {
      const std::int64_t n = r.msg.array("q")->shape[1];
      p.rows.emplace_back(N, n);
      segs.push_back({optional_int(r.msg.header, "q_start").value_or(c.tokens), n});
      N += n;
    }
    // q of every request, head by head, in the context's type.
    const std::size_t es = dtype_size(c.dtype);
    p.cmd.blob.resize(static_cast<std::size_t>(H * N * D) * es);
    std::vector<float> row(static_cast<std::size_t>(D));
    for (std::size_t j = 0; j < rs.size(); ++j) {
      const WireArray& q = *rs[j].msg.array("q");
      const DType qt = q.dtype == WireDType::f16 ? DType::f16 : DType::f32;
      const std::int64_t n = p.rows[j].second;
      for (std::int64_t h = 0; h < H; ++h)
        for (std::int64_t i = 0; i < n; ++i) {
          load_f32(q.bytes.data() + static_cast<std::size_t>((h * n + i) * D) * dtype_size(qt), qt,
                   row.data(), row.size());
          store_from_f32(
              row.data(), c.dtype,
              p.cmd.blob.data() + static_cast<std::size_t>((h * N + p.rows[j].first + i) * D) * es,
              row.size());
        }
    }
    p.cmd.head = {{"op", "attend"},
                  {"context", name},
                  {"heads", H},
                  {"causal", optional_bool(r0.msg.header, "causal", false)},
                  {"window", optional_string(r0.msg.header, "window").value_or("none")},
                  {"segments", segs}};
    p.requests = std::move(rs);
    return p;
  }

  // Packed rows [H * N][1 + D] (lse, o) merged over the ranks onto rank 0.
  void reduce_rows(const Command& c, std::vector<float>& rows) {
    CommWatch watch("the merge of an attend's partial results");
    merge_partials_to_root(comm_, rows, head_dim_of(c));
  }

  std::int64_t head_dim_of(const Command& c) {
    return store_.find(c.head["context"])->info().head_dim;
  }

  void answer_attend(Shared& sh, const Planned& p, const std::vector<float>& rows) {
    const std::int64_t H = p.cmd.head["heads"], D = head_dim_of(p.cmd);
    std::int64_t N = 0;
    for (auto [off, n] : p.rows) N += n;
    for (std::size_t j = 0; j < p.requests.size(); ++j) {
      const auto [off, n] = p.rows[j];
      WireArray o{"o", WireDType::f32, {H, n, D}, {}}, lse{"lse", WireDType::f32, {H, n}, {}};
      o.bytes.resize(static_cast<std::size_t>(H * n * D) * 4);
      lse.bytes.resize(static_cast<std::size_t>(H * n) * 4);
      for (std::int64_t h = 0; h < H; ++h)
        for (std::int64_t i = 0; i < n; ++i) {
          const float* src = rows.data() + static_cast<std::size_t>((h * N + off + i) * (D + 1));
          std::memcpy(lse.bytes.data() + static_cast<std::size_t>(h * n + i) * 4, src, 4);
          std::memcpy(o.bytes.data() + static_cast<std::size_t>((h * n + i) * D) * 4, src + 1,
                      static_cast<std::size_t>(D) * 4);
        }
      Message m = ok_reply({{"context", p.cmd.head["context"]}});
      m.arrays.push_back(std::move(o));
      if (optional_bool(p.requests[j].msg.header, "lse", true)) m.arrays.push_back(std::move(lse));
      push_reply(sh, p.requests[j].identity, with_id(std::move(m), p.requests[j]));
    }
    std::lock_guard<std::mutex> lock(sh.mu);
    sh.attend_rows += N;
  }

  void run_job_command(Shared& sh, const Planned& p) {
    const std::int64_t job = p.cmd.head["job"];
    {
      std::lock_guard<std::mutex> lock(sh.mu);
      sh.jobs[job].state = "running";
    }
    set_progress_observer([&sh, job](double done, std::int64_t chunks) {
      std::lock_guard<std::mutex> lock(sh.mu);
      sh.jobs[job].done_chunks = done;
      sh.jobs[job].chunks = chunks;
    });
    JobRecord result;
    try {
      const JobReport r = apply_job(p.cmd);
      result.state = r.stopped_by ? "stopped" : "done";
      double flops = 0;
      for (const RankMetrics& m : r.per_rank) flops += m.flops;
      result.report = {{"chunks", r.chunks},
                       {"chunks_done", r.chunks_done},
                       {"wall_s", r.wall_s},
                       {"ranks", r.ranks},
                       {"threads", r.threads},
                       {"gflops", flops / std::max(r.wall_s, 1e-9) / 1e9},
                       {"partition", partition_name(r.partition)}};
      if (r.stopped_by) result.report["partial_path"] = r.partial_path;
    } catch (const Error& e) {
      set_progress_observer(nullptr);
      if (e.error_class() == ErrorClass::comm || e.error_class() == ErrorClass::fault ||
          e.error_class() == ErrorClass::internal)
        throw;
      result.state = "failed";
      result.error = e.what();
    }
    set_progress_observer(nullptr);
    std::lock_guard<std::mutex> lock(sh.mu);
    JobRecord& j = sh.jobs[job];
    j.state = result.state;
    j.error = result.error;
    j.report = result.report;
    sh.requests += 1;
  }

  JobReport apply_job(const Command& c) {
    JobConfig cfg;
    agree(comm_, [&] { load_config_text(c.head["config"].get<std::string>(), "job config", cfg); });
    const JobReport r = run_job(comm_, cfg);
    if (rank_ == 0 && !r.stopped_by && !cfg.metrics.empty()) write_metrics(cfg, r);
    return r;
  }

  // ---- every rank ----------------------------------------------------------------
  // Applies a command to this rank's shards; an attend returns its packed
  // partial rows.
  std::vector<float> apply(const Command& c) {
    const json& h = c.head;
    const std::string op = h["op"];
    if (op == "create") {
      ContextInfo info;
      info.name = h["context"];
      info.dtype = context_dtype(h["dtype"]);
      info.heads_kv = h["heads_kv"];
      info.head_dim = h["head_dim"];
      ContextShard& s = store_.create(info);
      const std::int64_t t = h["tokens"];
      if (t > 0) {
        try {
          s.append(c.blob.data(), c.blob.data() + c.blob.size() / 2, t);
        } catch (...) {
          store_.drop(info.name);
          throw;
        }
      }
    } else if (op == "append") {
      store_.find(h["context"])
          ->append(c.blob.data(), c.blob.data() + c.blob.size() / 2, h["tokens"]);
    } else if (op == "drop") {
      store_.drop(h["context"]);
    } else if (op == "load") {
      read_context_file(store_, h["context"], h["file"].get<ContextFile>());
    } else if (op == "attend") {
      AttendBatch b;
      b.heads = h["heads"];
      b.causal = h["causal"];
      b.window = Window::parse(h["window"].get<std::string>(), "window");
      for (const json& s : h["segments"]) b.segments.emplace_back(s[0], s[1]);
      const ContextShard& shard = *store_.find(h["context"]);
      return attend_shard(shard, b, c.blob.data(), opt_.threads);
    }
    return {};
  }

  void worker_loop() {
    while (true) {
      Command c;
      broadcast_command(comm_, false, c);
      const std::string op = c.head["op"];
      if (op == "quit") return;
      try {
        if (op == "job") {
          apply_job(c);
          continue;
        }
        CommWatch watch("a '" + op + "' request on all ranks");
        std::vector<float> rows;
        agree(comm_, [&] { rows = apply(c); });
        if (op == "attend") reduce_rows(c, rows);
      } catch (const Error& e) {
        // Agreed on every rank: rank 0 answers the request; the service goes on.
        if (e.error_class() == ErrorClass::comm || e.error_class() == ErrorClass::fault ||
            (op == "job" && e.error_class() == ErrorClass::internal))
          throw;
      }
    }
  }

  void publish(Shared& sh) {
    json list = json::array();
    for (const auto& [name, s] : store_.all()) list.push_back(context_json(s.info(), store_.map()));
    std::lock_guard<std::mutex> lock(sh.mu);
    sh.contexts = std::move(list);
  }

  MPI_Comm comm_;
  const ServeOptions& opt_;
  ContextStore store_;
  int rank_ = 0;
};

}  // namespace

void run_service(MPI_Comm comm, const ServeOptions& options) {
  set_comm_timeout(options.comm_timeout);
  install_stop_handlers();
  Service(comm, options).run();
}

}  // namespace ringattn::serve
