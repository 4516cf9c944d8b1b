// `ringattn serve` (the attention service, under mpirun/srun), and its shell
// clients `ringattn submit` (a batch job) and `ringattn query` (ping, list,
// status, job_status, drop, or any header-only request). The wire format and
// the service's behaviour: docs/service.md.
//
// Includes: cli/commands.hpp, cli/mpi_session.hpp, serve/server.hpp,
// serve/client.hpp.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.hpp"
#include "cli/mpi_session.hpp"
#include "cli/option_checks.hpp"
#include "core/cpu.hpp"
#include "core/error.hpp"
#include "serve/client.hpp"
#include "serve/endpoint.hpp"
#include "serve/server.hpp"

namespace ringattn::cli {
namespace {

using nlohmann::json;

struct ClientFlags {
  std::string socket, endpoint, secret_file;
  double timeout_s = 30;
};

void add_client_flags(CLI::App& c, ClientFlags& f) {
  c.add_option("--socket", f.socket, "The service's Unix socket (default: serve's default)");
  c.add_option("--endpoint", f.endpoint, "A ZeroMQ endpoint instead (tcp://HOST:PORT)");
  c.add_option("--secret-file", f.secret_file, "File (mode 0600) holding the service's secret");
  c.add_option("--timeout", f.timeout_s, "Seconds to wait for a reply")
      ->check(positive())
      ->capture_default_str();
}

std::unique_ptr<serve::Client> connect(const ClientFlags& f) {
  const std::string e = !f.endpoint.empty() ? f.endpoint
                        : !f.socket.empty() ? f.socket
                                            : serve::default_socket_path();
  const std::string secret = f.secret_file.empty() ? "" : serve::read_secret_file(f.secret_file);
  return std::make_unique<serve::Client>(e, secret, static_cast<int>(f.timeout_s * 1000));
}

serve::Message header_only(json h) {
  serve::Message m;
  m.header = std::move(h);
  return m;
}

int serve_main(MpiSession& mpi, serve::ServeOptions o, const std::vector<std::string>& ctx) {
  if (o.data_dir.empty()) o.data_dir = std::filesystem::current_path().string();
  if (o.threads <= 0) o.threads = default_threads();
  for (const std::string& c : ctx) {
    const auto eq = c.find('=');
    RA_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < c.size(), usage,
             "--context wants NAME=FILE.h5, got '", c, "'");
    o.contexts.emplace_back(c.substr(0, eq), c.substr(eq + 1));
  }
  (void)mpi;
  serve::run_service(MPI_COMM_WORLD, o);
  return kOk;
}

}  // namespace

std::function<int(MpiSession&)> add_serve(CLI::App& app) {
  auto o = std::make_shared<serve::ServeOptions>();
  auto ctx = std::make_shared<std::vector<std::string>>();
  CLI::App* c = app.add_subcommand(
      "serve",
      "Run the attention service under mpirun/srun: key/value contexts resident across the "
      "ranks, attend requests answered by all ranks (docs/service.md). Stops on SIGTERM, SIGINT or "
      "SIGUSR1 to the ranks (mpirun forwards SIGUSR1) after answering what it accepted, exit 0.");
  c->add_option("--socket", o->socket,
                "Unix socket to listen on (made 0600 in a 0700 directory you own; default "
                "$XDG_RUNTIME_DIR/ringattn/sock, or /tmp/ringattn-UID/sock without it)");
  c->add_option("--tcp", o->tcp,
                "Listen on TCP HOST:PORT instead; beyond 127.0.0.1 needs --secret-file");
  c->add_option("--secret-file", o->secret_file,
                "File (yours, mode 0600) whose text every request must carry as 'secret'");
  c->add_option("--data-dir", o->data_dir,
                "Paths in requests resolve here and may not leave it (default: the current "
                "directory)");
  c->add_option("--queue", o->queue, "Requests that may wait; beyond that the reply is 'busy'")
      ->check(integer_in(1, 1 << 20))
      ->capture_default_str();
  c->add_option("--max-request-mb", o->max_request_mb, "Larger requests are refused undecoded")
      ->check(integer_in(1, 1 << 20))
      ->capture_default_str();
  c->add_option("--page-tokens", o->page_tokens,
                "Tokens per page: a context's pages are dealt to the ranks in turn")
      ->check(integer_in(1, std::int64_t{1} << 30))
      ->capture_default_str();
  c->add_option("--max-batch-rows", o->max_batch_rows,
                "Query rows (per head) of concurrent attends batched into one pass")
      ->check(integer_in(1, 1 << 20))
      ->capture_default_str();
  c->add_option("--threads", o->threads, "Kernel threads per rank (default: the rank's cores)")
      ->check(integer_in(1, 4096));
  c->add_option("--comm-timeout", o->comm_timeout,
                "Seconds a rank may block on its peers in a collective (0: forever)")
      ->check(non_negative())
      ->capture_default_str();
  c->add_option("--context", *ctx, "NAME=FILE.h5: load k, v [B, H_kv, T, D] at start (batch 0)");
  return [o, ctx](MpiSession& mpi) { return serve_main(mpi, *o, *ctx); };
}

std::function<int()> add_submit(CLI::App& app) {
  auto f = std::make_shared<ClientFlags>();
  auto config = std::make_shared<std::string>();
  auto wait = std::make_shared<bool>(false);
  CLI::App* c = app.add_subcommand(
      "submit",
      "Queue a batch job (a TOML run config) on a running service; prints its id. With --wait, "
      "waits for it: exit 0 done, 1 failed, 7 stopped.");
  add_client_flags(*c, *f);
  c->add_option("config", *config, "TOML run configuration (configs/*.toml)")->required();
  c->add_flag("--wait", *wait, "Wait for the job to end and print its report");
  return [f, config, wait]() {
    std::ifstream in(*config);
    RA_CHECK(in.good(), usage, "cannot read ", *config);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto client = connect(*f);
    const serve::Message r = client->call(header_only({{"op", "job"}, {"config", text}}));
    const std::int64_t job = r.header["job"];
    std::printf("job %lld\n", static_cast<long long>(job));
    std::fflush(stdout);
    if (!*wait) return static_cast<int>(kOk);
    // Short jobs end in milliseconds: poll fast at first, then back off.
    for (int wait_ms = 2;; wait_ms = std::min(2 * wait_ms, 500)) {
      const serve::Message s = client->call(header_only({{"op", "job_status"}, {"job", job}}));
      const std::string state = s.header["state"];
      if (state != "queued" && state != "running") {
        json shown = s.header;
        shown.erase("ok");
        shown.erase("id");
        std::printf("%s\n", shown.dump(2).c_str());
        return state == "done"      ? static_cast<int>(kOk)
               : state == "stopped" ? static_cast<int>(kStopped)
                                    : static_cast<int>(kFailure);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
    }
  };
}

std::function<int()> add_query(CLI::App& app) {
  auto f = std::make_shared<ClientFlags>();
  auto op = std::make_shared<std::string>();
  auto context = std::make_shared<std::string>();
  auto request = std::make_shared<std::string>();
  auto job = std::make_shared<std::int64_t>(-1);
  CLI::App* c = app.add_subcommand(
      "query",
      "Ask a running service: ping, list, status, job_status --job N, drop --context "
      "NAME, or --request JSON for any header-only request; prints the reply as JSON");
  add_client_flags(*c, *f);
  c->add_option("op", *op, "ping | list | status | job_status | drop");
  c->add_option("--context", *context, "The context (drop)");
  c->add_option("--job", *job, "The job (job_status)");
  c->add_option("--request", *request, "A whole request header as JSON");
  return [f, op, context, request, job]() {
    json h;
    if (!request->empty()) {
      h = json::parse(*request, nullptr, false);
      RA_CHECK(h.is_object(), usage, "--request must be a JSON object");
    } else {
      RA_CHECK(!op->empty(), usage, "query needs an op (ping, list, status, job_status, drop)");
      h = {{"op", *op}};
      if (!context->empty()) h["context"] = *context;
      if (*job >= 0) h["job"] = *job;
    }
    auto client = connect(*f);
    serve::Message r = client->call(header_only(h));
    r.header.erase("ok");
    r.header.erase("id");
    std::printf("%s\n", r.header.dump(2).c_str());
    return static_cast<int>(kOk);
  };
}

}  // namespace ringattn::cli
