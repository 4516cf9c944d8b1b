// The service end to end, from a client: run against a live `ringattn serve`
// (tests/serve/test_serve.sh starts it at 1-4 ranks with small pages, so
// every context spans every rank) given by --endpoint. Checks attend against
// the float64 reference (non-dividing lengths, appends crossing pages and
// ranks, f16, causal, windows, positions before the keys, rows that see
// nothing), HDF5 loads, concurrency with batching, and that every bad request
// gets one error line while the service keeps answering.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <zmq.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "core/dtype.hpp"
#include "core/seeded_data.hpp"
#include "kernel/params.hpp"
#include "kernel/reference.hpp"
#include "serve/client.hpp"
#include "serve/protocol.hpp"

namespace {

using namespace ringattn;
using namespace ringattn::serve;
using nlohmann::json;

std::string g_endpoint;
std::string g_data_dir;

// K/V a context holds, kept by the test to compute the reference.
struct Kv {
  DType dtype = DType::f32;
  std::int64_t heads_kv = 0, dim = 0, tokens = 0;
  std::vector<std::uint16_t> k16, v16;
  std::vector<float> k32, v32;
  // Tokens [t0, t0 + t) of a seeded stream as [H_kv][t][D] bytes.
  std::string bytes(bool is_k, std::int64_t t0, std::int64_t t, std::uint64_t seed) const {
    const std::size_t es = dtype_size(dtype);
    std::string out(static_cast<std::size_t>(heads_kv * t * dim) * es, '\0');
    for (std::int64_t h = 0; h < heads_kv; ++h)
      fill_seeded(out.data() + static_cast<std::size_t>(h * t * dim) * es, dtype,
                  static_cast<std::size_t>(t * dim), seed + (is_k ? 0 : 1000) + h,
                  static_cast<std::uint64_t>(t0 * dim));
    return out;
  }
  // The context after appending tokens [tokens, tokens + t) (same seeds).
  void grow(std::int64_t t, std::uint64_t seed) {
    const std::string kb = bytes(true, tokens, t, seed), vb = bytes(false, tokens, t, seed);
    const std::int64_t T = tokens + t;
    auto regrow = [&](auto& vec, const std::string& add) {
      using E = typename std::decay_t<decltype(vec)>::value_type;
      std::vector<E> next(static_cast<std::size_t>(heads_kv * T * dim));
      for (std::int64_t h = 0; h < heads_kv; ++h) {
        if (tokens)
          std::memcpy(next.data() + h * T * dim, vec.data() + h * tokens * dim,
                      static_cast<std::size_t>(tokens * dim) * sizeof(E));
        std::memcpy(next.data() + h * T * dim + tokens * dim, add.data() + h * t * dim * sizeof(E),
                    static_cast<std::size_t>(t * dim) * sizeof(E));
      }
      vec = std::move(next);
    };
    if (dtype == DType::f16) {
      regrow(k16, kb);
      regrow(v16, vb);
    } else {
      regrow(k32, kb);
      regrow(v32, vb);
    }
    tokens = T;
  }
  const void* k() const { return dtype == DType::f16 ? (const void*)k16.data() : k32.data(); }
  const void* v() const { return dtype == DType::f16 ? (const void*)v16.data() : v32.data(); }
};

WireArray array(const std::string& name, WireDType t, std::vector<std::int64_t> shape,
                std::string bytes) {
  return WireArray{name, t, std::move(shape), std::move(bytes)};
}

WireDType wire(DType t) {
  return t == DType::f16 ? WireDType::f16 : WireDType::f32;
}

Message msg(json h, std::vector<WireArray> a = {}) {
  Message m;
  m.header = std::move(h);
  m.arrays = std::move(a);
  return m;
}

std::string seeded_q(std::int64_t H, std::int64_t n, std::int64_t D, std::uint64_t seed) {
  std::string q(static_cast<std::size_t>(H * n * D) * 4, '\0');
  fill_seeded(q.data(), DType::f32, static_cast<std::size_t>(H * n * D), seed);
  return q;
}

struct Expect {
  std::int64_t q_start = 0;
  bool causal = false;
  Window window;
};

// The service's o and lse for q against kv, checked against the float64
// reference on the same values (q rounded to the context's type).
void check_attend(const Message& r, const Kv& kv, const std::string& q, std::int64_t H,
                  std::int64_t n, const Expect& e) {
  ASSERT_TRUE(r.header.value("ok", false)) << r.header.dump();
  const WireArray* o = r.array("o");
  const WireArray* lse = r.array("lse");
  ASSERT_TRUE(o && lse) << r.header.dump();
  ASSERT_EQ(o->shape, (std::vector<std::int64_t>{H, n, kv.dim}));
  ASSERT_EQ(lse->shape, (std::vector<std::int64_t>{H, n}));
  std::string qc(static_cast<std::size_t>(H * n * kv.dim) * dtype_size(kv.dtype), '\0');
  std::vector<float> qf(static_cast<std::size_t>(H * n * kv.dim));
  std::memcpy(qf.data(), q.data(), q.size());
  store_from_f32(qf.data(), kv.dtype, qc.data(), qf.size());
  AttnParams p = AttnParams::dense(qc.data(), kv.k(), kv.v(), kv.dtype, 1, H, kv.heads_kv, n,
                                   kv.tokens, kv.dim);
  p.causal = e.causal;
  p.window = e.window;
  p.q_pos = Positions::contiguous(e.q_start, n);
  std::vector<double> ro(static_cast<std::size_t>(H * n * kv.dim)),
      rl(static_cast<std::size_t>(H * n));
  reference_attention(p, ro.data(), rl.data());
  std::vector<float> of(ro.size()), lf(rl.size());
  std::memcpy(of.data(), o->bytes.data(), o->bytes.size());
  std::memcpy(lf.data(), lse->bytes.data(), lse->bytes.size());
  const Comparison co =
      compare_to_reference(of.data(), ro.data(), static_cast<std::int64_t>(ro.size()));
  EXPECT_LE(co.rel_err, 1e-5) << "o worst at " << co.worst << ": " << co.worst_value << " vs "
                              << co.worst_ref;
  for (std::size_t i = 0; i < rl.size(); ++i) {
    if (std::isinf(rl[i])) {
      EXPECT_TRUE(std::isinf(lf[i]) && lf[i] < 0) << "lse row " << i;
    } else {
      EXPECT_NEAR(lf[i], rl[i], 1e-5 * std::max(1.0, std::abs(rl[i]))) << "lse row " << i;
    }
  }
}

Message attend(Client& c, const std::string& ctx, const std::string& q, std::int64_t H,
               std::int64_t n, std::int64_t D, const Expect& e, bool default_start = false) {
  json h = {{"op", "attend"}, {"context", ctx}, {"causal", e.causal}, {"window", e.window.text()}};
  if (!default_start) h["q_start"] = e.q_start;
  return c.request(msg(h, {array("q", WireDType::f32, {H, n, D}, q)}));
}

Kv make_context(Client& c, const std::string& name, DType t, std::int64_t hk, std::int64_t d,
                std::int64_t tokens, std::uint64_t seed) {
  Kv kv;
  kv.dtype = t;
  kv.heads_kv = hk;
  kv.dim = d;
  c.request(msg({{"op", "drop"}, {"context", name}}));  // left from an earlier run
  const std::string kb = kv.bytes(true, 0, tokens, seed), vb = kv.bytes(false, 0, tokens, seed);
  const Message r = c.request(
      msg({{"op", "create"},
           {"context", name},
           {"dtype", dtype_name(t)},
           {"heads_kv", hk},
           {"head_dim", d}},
          {array("k", wire(t), {hk, tokens, d}, kb), array("v", wire(t), {hk, tokens, d}, vb)}));
  EXPECT_TRUE(r.header.value("ok", false)) << r.header.dump();
  EXPECT_EQ(r.header.value("tokens", -1), tokens);
  kv.grow(tokens, seed);
  return kv;
}

TEST(Service, PingSaysRanks) {
  Client c(g_endpoint);
  const Message r = c.request(msg({{"op", "ping"}}));
  ASSERT_TRUE(r.header.value("ok", false)) << r.header.dump();
  EXPECT_GE(r.header.value("ranks", 0), 1);
}

TEST(Service, AttendExactAcrossShards) {
  Client c(g_endpoint);
  // 1000 tokens in pages the driver made small: every rank holds some.
  const Kv kv = make_context(c, "exact", DType::f32, 2, 64, 1000, 11);
  const std::int64_t H = 4, n = 3, D = 64;
  const std::string q = seeded_q(H, n, D, 5);
  for (const Expect& e : {Expect{1000, false, {}}, Expect{500, true, {}},
                          Expect{500, true, Window{100, 0}}, Expect{300, false, Window{3, 2}},
                          Expect{-10, true, {}}, Expect{2000, false, Window{10, 10}}}) {
    SCOPED_TRACE("q_start " + std::to_string(e.q_start) + (e.causal ? " causal" : "") + " window " +
                 e.window.text());
    check_attend(attend(c, "exact", q, H, n, D, e), kv, q, H, n, e);
  }
  // Default q_start: right after the last token.
  check_attend(attend(c, "exact", q, H, n, D, Expect{}, true), kv, q, H, n, Expect{1000, true, {}});
}

TEST(Service, AppendsCrossPagesAndRanks) {
  Client c(g_endpoint);
  Kv kv = make_context(c, "grow", DType::f32, 1, 7, 5, 21);
  const std::string q = seeded_q(3, 2, 7, 9);
  for (std::int64_t t : {1, 5, 31, 2, 40}) {
    const std::string kb = kv.bytes(true, kv.tokens, t, 21), vb = kv.bytes(false, kv.tokens, t, 21);
    const Message r = c.request(msg(
        {{"op", "append"}, {"context", "grow"}},
        {array("k", WireDType::f32, {1, t, 7}, kb), array("v", WireDType::f32, {1, t, 7}, vb)}));
    ASSERT_TRUE(r.header.value("ok", false)) << r.header.dump();
    kv.grow(t, 21);
    EXPECT_EQ(r.header.value("tokens", -1), kv.tokens);
    check_attend(attend(c, "grow", q, 3, 2, 7, Expect{}, true), kv, q, 3, 2,
                 Expect{kv.tokens, false, {}});
    check_attend(attend(c, "grow", q, 3, 2, 7, Expect{kv.tokens - 30, true, {}}), kv, q, 3, 2,
                 Expect{kv.tokens - 30, true, {}});
  }
  const Message l = c.request(msg({{"op", "list"}}));
  bool found = false;
  for (const json& x : l.header["contexts"])
    if (x["name"] == "grow") {
      found = true;
      EXPECT_EQ(x["tokens"].get<std::int64_t>(), kv.tokens);
      std::int64_t bytes = 0;
      for (const json& b : x["bytes_per_rank"]) bytes += b.get<std::int64_t>();
      EXPECT_EQ(bytes, 2 * kv.tokens * 7 * 4);
    }
  EXPECT_TRUE(found) << l.header.dump();
}

TEST(Service, F16ContextKeepsItsType) {
  Client c(g_endpoint);
  const Kv kv = make_context(c, "half", DType::f16, 2, 32, 333, 31);
  const std::string q = seeded_q(6, 4, 32, 3);
  check_attend(attend(c, "half", q, 6, 4, 32, Expect{200, true, {}}), kv, q, 6, 4,
               Expect{200, true, {}});
  // f32 k/v for an f16 context: refused, nothing appended.
  const Message r =
      c.request(msg({{"op", "append"}, {"context", "half"}},
                    {array("k", WireDType::f32, {2, 1, 32}, std::string(256, '\0')),
                     array("v", WireDType::f32, {2, 1, 32}, std::string(256, '\0'))}));
  EXPECT_FALSE(r.header.value("ok", true));
  EXPECT_EQ(r.header.value("class", ""), "input");
}

TEST(Service, ConcurrentClientsAreBatchedAndExact) {
  {
    Client c(g_endpoint);
    make_context(c, "shared", DType::f32, 2, 64, 2049, 41);
  }
  Kv kv;
  kv.dtype = DType::f32;
  kv.heads_kv = 2;
  kv.dim = 64;
  kv.grow(2049, 41);
  const Message before = Client(g_endpoint).request(msg({{"op", "status"}}));
  constexpr int kClients = 12, kEach = 8;
  std::atomic<int> busy{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kClients; ++t)
    threads.emplace_back([&, t] {
      Client c(g_endpoint);
      for (int i = 0; i < kEach; ++i) {
        const std::string q = seeded_q(8, 1, 64, static_cast<std::uint64_t>(100 + t * kEach + i));
        Message r;
        for (int tries = 0; tries < 200; ++tries) {  // busy: back off and retry
          r = attend(c, "shared", q, 8, 1, 64, Expect{}, true);
          if (r.header.value("class", "") != "busy") break;
          ++busy;
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        check_attend(r, kv, q, 8, 1, Expect{2049, false, {}});
      }
    });
  for (auto& th : threads) th.join();
  const Message after = Client(g_endpoint).request(msg({{"op", "status"}}));
  const std::int64_t requests =
      after.header["requests"].get<std::int64_t>() - before.header["requests"].get<std::int64_t>();
  const std::int64_t batches =
      after.header["batches"].get<std::int64_t>() - before.header["batches"].get<std::int64_t>();
  EXPECT_EQ(requests, kClients * kEach);
  std::printf("concurrency: %lld attends in %lld passes, %d busy replies retried\n",
              static_cast<long long>(requests), static_cast<long long>(batches), busy.load());
}

// Every refusal: one line, a class, and the service answers the next request.
void expect_refused(Client& c, const Message& r, const char* cls) {
  EXPECT_FALSE(r.header.value("ok", true)) << r.header.dump();
  EXPECT_EQ(r.header.value("class", ""), cls) << r.header.dump();
  const std::string text = r.header.value("error", "");
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(text.find('\n'), std::string::npos);
  EXPECT_TRUE(c.request(msg({{"op", "ping"}})).header.value("ok", false));
}

TEST(Service, BadRequestsGetOneLineAndChangeNothing) {
  Client c(g_endpoint);
  const Kv kv = make_context(c, "bad", DType::f32, 2, 16, 50, 51);
  expect_refused(c, c.request(msg({{"op", "frobnicate"}})), "usage");
  expect_refused(c,
                 c.request(msg({{"op", "attend"}, {"context", "nope"}},
                               {array("q", WireDType::f32, {2, 1, 16}, std::string(128, 'a'))})),
                 "usage");
  expect_refused(c,
                 c.request(msg({{"op", "attend"}, {"context", "bad"}},
                               {array("q", WireDType::f32, {2, 1, 8}, std::string(64, '\0'))})),
                 "input");
  expect_refused(c,
                 c.request(msg({{"op", "attend"}, {"context", "bad"}},
                               {array("q", WireDType::f32, {3, 1, 16}, std::string(192, '\0'))})),
                 "input");
  std::string nan_q(128, '\0');
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(nan_q.data() + 40, &nan, 4);
  expect_refused(c,
                 c.request(msg({{"op", "attend"}, {"context", "bad"}},
                               {array("q", WireDType::f32, {2, 1, 16}, nan_q)})),
                 "input");
  std::string inf_k(2 * 16 * 4, '\0');
  const float inf = std::numeric_limits<float>::infinity();
  std::memcpy(inf_k.data() + 8, &inf, 4);
  expect_refused(c,
                 c.request(msg({{"op", "append"}, {"context", "bad"}},
                               {array("k", WireDType::f32, {2, 1, 16}, inf_k),
                                array("v", WireDType::f32, {2, 1, 16}, std::string(128, '\0'))})),
                 "input");
  expect_refused(c,
                 c.request(msg({{"op", "attend"}, {"context", "bad"}, {"window", "sideways"}},
                               {array("q", WireDType::f32, {2, 1, 16}, std::string(128, '\0'))})),
                 "usage");
  expect_refused(
      c,
      c.request(
          msg({{"op", "create"}, {"context", "bad name!"}, {"heads_kv", 1}, {"head_dim", 4}})),
      "usage");
  expect_refused(
      c, c.request(msg({{"op", "create"}, {"context", "bad"}, {"heads_kv", 1}, {"head_dim", 4}})),
      "usage");
  expect_refused(
      c,
      c.request(msg({{"op", "create"}, {"context", "big"}, {"heads_kv", 1}, {"head_dim", 100000}})),
      "usage");
  expect_refused(c, c.request(msg({{"op", "attend"}, {"context", 7}})), "usage");
  // Frames the header does not describe.
  expect_refused(c, c.request_frames({"this is not json"}), "usage");
  expect_refused(c, c.request_frames({"[1, 2]"}), "usage");
  expect_refused(
      c,
      c.request_frames({R"({"op":"attend","context":"bad","arrays":[{"name":"q","dtype":"f32",)"
                        R"("shape":[2,1,16]}]})",
                        std::string(127, '\0')}),
      "usage");
  expect_refused(c,
                 c.request_frames({R"({"op":"attend","context":"bad","arrays":[{"name":"q",)"
                                   R"("dtype":"f32","shape":[2,1,16]}]})"}),
                 "usage");
  expect_refused(c,
                 c.request_frames({R"({"op":"attend","context":"bad","arrays":[{"name":"q",)"
                                   R"("dtype":"f64","shape":[2,1,16]}]})",
                                   std::string(256, '\0')}),
                 "usage");
  // Oversized: the driver starts the service with --max-request-mb 4.
  expect_refused(c,
                 c.request(msg({{"op", "append"}, {"context", "bad"}},
                               {array("k", WireDType::f32, {2, 40000, 16}, std::string(5120000, 0)),
                                array("v", WireDType::f32, {2, 1, 16}, std::string(128, 0))})),
                 "usage");
  // Nothing above changed the context.
  const std::string q = seeded_q(2, 1, 16, 8);
  check_attend(attend(c, "bad", q, 2, 1, 16, Expect{}, true), kv, q, 2, 1, Expect{50, false, {}});
}

TEST(Service, HalfMessagesAndVanishingClientsHangNothing) {
  // A raw socket that sends no delimiter, then one that sends a request and
  // leaves before the reply, then one that leaves mid-multipart: the service
  // answers the next client at once.
  void* ctx = zmq_ctx_new();
  for (int kind = 0; kind < 3; ++kind) {
    void* s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    ASSERT_EQ(zmq_connect(s, normalize_endpoint(g_endpoint).c_str()), 0);
    if (kind == 0) {
      zmq_send(s, "{\"op\":\"ping\"}", 13, 0);  // no empty frame first
    } else if (kind == 1) {
      const std::string big(1 << 20, '\0');
      zmq_send(s, "", 0, ZMQ_SNDMORE);
      const std::string h = R"({"op":"attend","context":"exact","arrays":[{"name":"q",)"
                            R"("dtype":"f32","shape":[4,4096,64]}]})";
      zmq_send(s, h.data(), h.size(), ZMQ_SNDMORE);
      zmq_send(s, big.data(), big.size(), 0);  // the wrong length too: refused
    } else {
      zmq_send(s, "", 0, ZMQ_SNDMORE);
      zmq_send(s, "{\"op\":\"ping\"", 12, ZMQ_SNDMORE);  // never finished
    }
    zmq_close(s);
  }
  zmq_ctx_term(ctx);
  Client c(g_endpoint, "", 10000);
  EXPECT_TRUE(c.request(msg({{"op", "ping"}})).header.value("ok", false));
}

// k, v [1, H_kv, T, D] f32 written to an HDF5 file with the HDF5 C API.
void write_kv_file(const std::string& path, const Kv& kv) {
  const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  const hsize_t dims[4] = {1, static_cast<hsize_t>(kv.heads_kv), static_cast<hsize_t>(kv.tokens),
                           static_cast<hsize_t>(kv.dim)};
  for (int i = 0; i < 2; ++i) {
    const hid_t sp = H5Screate_simple(4, dims, nullptr);
    const hid_t d = H5Dcreate2(f, i == 0 ? "k" : "v", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT,
                               H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, i == 0 ? kv.k() : kv.v());
    H5Dclose(d);
    H5Sclose(sp);
  }
  H5Fclose(f);
}

TEST(Service, LoadsHdf5ContextsInsideTheDataDirOnly) {
  ASSERT_FALSE(g_data_dir.empty()) << "the driver passes --data-dir";
  Kv kv;
  kv.heads_kv = 2;
  kv.dim = 24;
  kv.grow(777, 61);
  write_kv_file(g_data_dir + "/ctx.h5", kv);
  Client c(g_endpoint);
  c.request(msg({{"op", "drop"}, {"context", "loaded"}}));
  const Message r = c.request(msg({{"op", "load"}, {"context", "loaded"}, {"path", "ctx.h5"}}));
  ASSERT_TRUE(r.header.value("ok", false)) << r.header.dump();
  EXPECT_EQ(r.header.value("tokens", -1), 777);
  const std::string q = seeded_q(4, 5, 24, 12);
  check_attend(attend(c, "loaded", q, 4, 5, 24, Expect{400, true, {}}), kv, q, 4, 5,
               Expect{400, true, {}});
  expect_refused(c, c.request(msg({{"op", "load"}, {"context", "x"}, {"path", "../ctx.h5"}})),
                 "usage");
  expect_refused(c, c.request(msg({{"op", "load"}, {"context", "x"}, {"path", "/etc/passwd"}})),
                 "usage");
  expect_refused(c, c.request(msg({{"op", "load"}, {"context", "x"}, {"path", "missing.h5"}})),
                 "io");
  EXPECT_TRUE(c.request(msg({{"op", "drop"}, {"context", "loaded"}})).header.value("ok", false));
  expect_refused(c, c.request(msg({{"op", "drop"}, {"context", "loaded"}})), "usage");
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--endpoint") g_endpoint = argv[i + 1];
    if (std::string(argv[i]) == "--data-dir") g_data_dir = argv[i + 1];
  }
  if (g_endpoint.empty()) {
    std::fprintf(stderr, "usage: test_service_client --endpoint E --data-dir D\n");
    return 2;
  }
  return RUN_ALL_TESTS();
}
