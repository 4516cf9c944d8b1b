// A load test of a running `ringattn serve`, from a separate client process
// (bench/serve_load.sh starts the service and runs this). Bounded in count:
// every phase sends a fixed number of requests. Prints one JSON object whose
// figures are ratios measured in the same run where the issue asks for them:
//
//   stream_gbs      this machine's single-thread streaming read bandwidth
//                   (one rank's core), measured here first; and
//                   stream_gbs_per_rank_all_streaming, each core's share
//                   while as many cores as the service has ranks stream at
//                   once (what a rank gets while its peers read their shards)
//   decode          single-token attends (q [H, 1, D]) against the resident
//                   context --context: p50/p99 latency, and p50 against the
//                   memory bound (the largest rank's context bytes / stream_gbs)
//   concurrent      --clients threads, each its own connection, single-token
//                   attends: throughput against one client at a time
//   small           a --small-tokens context: round-trip p50/p99
//   rss             rank 0's resident memory before and after --rss-requests
//                   requests on the small context, after a warm-up
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "core/aligned_buffer.hpp"
#include "core/dtype.hpp"
#include "core/seeded_data.hpp"
#include "serve/client.hpp"
#include "serve/protocol.hpp"

namespace {

using namespace ringattn;
using namespace ringattn::serve;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Best of 5 passes of a sum over 1 GiB: what one core streams from memory.
double stream_read_gbs(std::size_t bytes = std::size_t{1} << 30) {
  const std::size_t n = bytes / sizeof(float);
  AlignedBuffer<float> buf(n);
  for (std::size_t i = 0; i < n; ++i) buf[i] = static_cast<float>(i & 1023);
  double best = 0;
  volatile float sink = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = Clock::now();
    float acc[16] = {};
    const float* p = buf.data();
    for (std::size_t i = 0; i < n; i += 16) {
#pragma omp simd
      for (int j = 0; j < 16; ++j) acc[j] += p[i + static_cast<std::size_t>(j)];
    }
    float total = 0;
    for (float a : acc) total += a;
    sink = sink + total;
    best = std::max(best, static_cast<double>(n * sizeof(float)) / seconds_since(t0) / 1e9);
  }
  return best;
}

Message attend_msg(const std::string& ctx, std::int64_t H, std::int64_t n, std::int64_t D,
                   std::uint64_t seed) {
  Message m;
  m.header = {{"op", "attend"}, {"context", ctx}, {"lse", false}};
  std::string q(static_cast<std::size_t>(H * n * D) * 4, '\0');
  fill_seeded(q.data(), DType::f32, static_cast<std::size_t>(H * n * D), seed);
  m.arrays.push_back({"q", WireDType::f32, {H, n, D}, std::move(q)});
  return m;
}

// What each of `ranks` cores streams while all of them stream at once (the
// ranks of a node share its memory channels): the slowest one's rate.
double concurrent_stream_gbs(int ranks) {
  std::vector<double> gbs(static_cast<std::size_t>(ranks));
  std::vector<std::thread> th;
  for (int r = 0; r < ranks; ++r)
    th.emplace_back(
        [&, r] { gbs[static_cast<std::size_t>(r)] = stream_read_gbs(std::size_t{512} << 20); });
  for (auto& t : th) t.join();
  return *std::min_element(gbs.begin(), gbs.end());
}

json percentiles(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  auto at = [&](double f) {
    return ms[std::min(ms.size() - 1,
                       static_cast<std::size_t>(f * static_cast<double>(ms.size())))];
  };
  return {
      {"requests", ms.size()}, {"p50_ms", at(0.5)}, {"p99_ms", at(0.99)}, {"max_ms", ms.back()}};
}

json latency(Client& c, const std::string& ctx, std::int64_t H, std::int64_t D, int requests) {
  std::vector<double> ms;
  for (int i = 0; i < requests; ++i) {
    const Message m = attend_msg(ctx, H, 1, D, static_cast<std::uint64_t>(i));
    const auto t0 = Clock::now();
    const Message r = c.call(m);
    ms.push_back(seconds_since(t0) * 1e3);
  }
  return percentiles(ms);
}

const json* find_context(const json& list, const std::string& name) {
  for (const json& c : list)
    if (c["name"] == name) return &c;
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  std::string endpoint, context = "big";
  std::int64_t heads = 8, small_tokens = 4096;
  int decode_requests = 100, clients = 64, each = 10, small_requests = 1000, rss_requests = 10000;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--endpoint")
      endpoint = v;
    else if (a == "--context")
      context = v;
    else if (a == "--heads")
      heads = std::stoll(v);
    else if (a == "--decode-requests")
      decode_requests = std::stoi(v);
    else if (a == "--clients")
      clients = std::stoi(v);
    else if (a == "--each")
      each = std::stoi(v);
    else if (a == "--small-tokens")
      small_tokens = std::stoll(v);
    else if (a == "--small-requests")
      small_requests = std::stoi(v);
    else if (a == "--rss-requests")
      rss_requests = std::stoi(v);
    else {
      std::fprintf(stderr, "serve_load: unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  if (endpoint.empty()) {
    std::fprintf(stderr, "usage: serve_load --endpoint E [--context NAME] [...]\n");
    return 2;
  }
  try {
    json out;
    out["stream_gbs"] = stream_read_gbs();
    Client c(endpoint, "", 600000);
    const int ranks = c.call(Message{{{"op", "ping"}}, {}}).header["ranks"];
    out["stream_gbs_per_rank_all_streaming"] = concurrent_stream_gbs(ranks);
    const json list = c.call(Message{{{"op", "list"}}, {}}).header["contexts"];
    const json* big = find_context(list, context);
    if (!big) throw std::runtime_error("the service holds no context '" + context + "'");
    const std::int64_t D = (*big)["head_dim"];
    std::int64_t max_bytes = 0;
    for (const json& b : (*big)["bytes_per_rank"]) max_bytes = std::max<std::int64_t>(max_bytes, b);
    // Decode against the big context.
    latency(c, context, heads, D, 5);  // warm-up
    json dec = latency(c, context, heads, D, decode_requests);
    const double bound_ms =
        static_cast<double>(max_bytes) / (out["stream_gbs"].get<double>() * 1e9) * 1e3;
    dec["context_tokens"] = (*big)["tokens"];
    dec["bytes_per_rank_max"] = max_bytes;
    dec["memory_bound_ms"] = bound_ms;
    dec["p50_over_bound"] = dec["p50_ms"].get<double>() / bound_ms;
    // The bound when every rank of the node streams at once, as they do.
    const double shared_ms = static_cast<double>(max_bytes) /
                             (out["stream_gbs_per_rank_all_streaming"].get<double>() * 1e9) * 1e3;
    dec["memory_bound_all_streaming_ms"] = shared_ms;
    dec["p50_over_bound_all_streaming"] = dec["p50_ms"].get<double>() / shared_ms;
    out["decode"] = dec;
    // Concurrency: one at a time, then `clients` at once.
    {
      const auto t0 = Clock::now();
      const int serial = std::max(clients, 16);
      for (int i = 0; i < serial; ++i)
        c.call(attend_msg(context, heads, 1, D, 1000u + static_cast<unsigned>(i)));
      const double serial_rate = serial / seconds_since(t0);
      const json before = c.call(Message{{{"op", "status"}}, {}}).header;
      std::atomic<int> busy{0}, done{0};
      std::vector<std::thread> th;
      const auto t1 = Clock::now();
      for (int t = 0; t < clients; ++t)
        th.emplace_back([&, t] {
          Client mine(endpoint, "", 600000);
          for (int i = 0; i < each; ++i) {
            const Message m =
                attend_msg(context, heads, 1, D, 5000u + static_cast<unsigned>(t * each + i));
            while (true) {
              const Message r = mine.request(m);
              if (r.header.value("ok", false)) break;
              if (r.header.value("class", "") != "busy") throw std::runtime_error(r.header.dump());
              ++busy;
              std::this_thread::sleep_for(std::chrono::milliseconds(2));
            }
            ++done;
          }
        });
      for (auto& x : th) x.join();
      const double rate = done.load() / seconds_since(t1);
      const json after = c.call(Message{{{"op", "status"}}, {}}).header;
      out["concurrent"] = {
          {"clients", clients},
          {"requests", done.load()},
          {"serial_per_s", serial_rate},
          {"concurrent_per_s", rate},
          {"speedup", rate / serial_rate},
          {"busy_retries", busy.load()},
          {"passes", after["batches"].get<std::int64_t>() - before["batches"].get<std::int64_t>()}};
    }
    // A small context: round trips, then memory over many requests.
    {
      Message mk;
      mk.header = {{"op", "create"},
                   {"context", "small"},
                   {"dtype", "f16"},
                   {"heads_kv", (*big)["heads_kv"]},
                   {"head_dim", D}};
      const std::int64_t hk = (*big)["heads_kv"];
      std::string kv(static_cast<std::size_t>(hk * small_tokens * D) * 2, '\0');
      fill_seeded(kv.data(), DType::f16, static_cast<std::size_t>(hk * small_tokens * D), 7);
      mk.arrays.push_back({"k", WireDType::f16, {hk, small_tokens, D}, kv});
      mk.arrays.push_back({"v", WireDType::f16, {hk, small_tokens, D}, kv});
      c.request(Message{{{"op", "drop"}, {"context", "small"}}, {}});
      c.call(mk);
      latency(c, "small", heads, D, 50);
      json sm = latency(c, "small", heads, D, small_requests);
      sm["context_tokens"] = small_tokens;
      out["small"] = sm;
      latency(c, "small", heads, D, 1000);  // warm-up
      const double rss0 = c.call(Message{{{"op", "status"}}, {}}).header["rss_mb"];
      latency(c, "small", heads, D, rss_requests);
      const double rss1 = c.call(Message{{{"op", "status"}}, {}}).header["rss_mb"];
      out["rss"] = {{"requests", rss_requests},
                    {"before_mb", rss0},
                    {"after_mb", rss1},
                    {"growth", rss1 / rss0 - 1}};
    }
    std::printf("%s\n", out.dump(2).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "serve_load: %s\n", e.what());
    return 1;
  }
  return 0;
}
