// The service's parts without a server: the wire format's decoder refusing
// what docs/service.md says it refuses, the page map against a brute-force
// deal of tokens, a shard's rows and positions across appends, and path
// resolution keeping requests inside the data directory.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "serve/context_store.hpp"
#include "serve/endpoint.hpp"
#include "serve/protocol.hpp"

namespace {

using namespace ringattn;
using namespace ringattn::serve;

TEST(Protocol, RoundTripsArrays) {
  Message m;
  m.header = {{"op", "attend"}, {"context", "c"}};
  m.arrays.push_back({"q", WireDType::f32, {2, 3}, std::string(24, 'x')});
  m.arrays.push_back({"pos", WireDType::i64, {0}, std::string()});
  const Message back = decode_message(encode_message(m));
  EXPECT_EQ(back.header["op"], "attend");
  ASSERT_EQ(back.arrays.size(), 2u);
  EXPECT_EQ(back.array("q")->shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(back.array("q")->bytes, std::string(24, 'x'));
  EXPECT_EQ(back.array("pos")->elements(), 0);
}

void expect_usage(const std::vector<std::string>& frames, const char* says) {
  try {
    decode_message(frames);
    ADD_FAILURE() << "accepted: " << frames[0];
  } catch (const Error& e) {
    EXPECT_EQ(e.error_class(), ErrorClass::usage);
    EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
  }
}

TEST(Protocol, RefusesWhatTheHeaderDoesNotDescribe) {
  expect_usage({"not json"}, "not JSON");
  expect_usage({"[1]"}, "JSON object");
  expect_usage({R"({"arrays": 3})"}, "must be a list");
  expect_usage({R"({"arrays": [{"name":"q","dtype":"f32","shape":[1]}]})"}, "1 arrays but 0");
  expect_usage({R"({"arrays": [{"name":"q","dtype":"f32","shape":[2]}]})", "1234567"},
               "holds 7 bytes");
  expect_usage({R"({"arrays": [{"name":"q","dtype":"bf16","shape":[1]}]})", "12"}, "dtype");
  expect_usage({R"({"arrays": [{"name":"q","dtype":"f32","shape":[-1]}]})", ""}, "sizes");
  expect_usage({R"({"arrays": [{"dtype":"f32","shape":[1]}]})", "1234"}, "name");
  expect_usage({R"({"arrays": [{"name":"q","dtype":"f32","shape":[1]},)"
                R"({"name":"q","dtype":"f32","shape":[1]}]})",
                "1234", "1234"},
               "twice");
  // Sizes whose product overflows int64 are refused, not wrapped.
  expect_usage(
      {R"({"arrays": [{"name":"q","dtype":"f32","shape":[1099511627776,1099511627776]}]})", ""},
      "bytes");
}

TEST(Protocol, TypedFields) {
  const nlohmann::json h = {{"op", "x"}, {"n", 3}, {"s", "t"}, {"b", true}, {"bad", "3"}};
  EXPECT_EQ(field_int(h, "n"), 3);
  EXPECT_EQ(field_string(h, "s"), "t");
  EXPECT_TRUE(optional_bool(h, "b", false));
  EXPECT_FALSE(optional_int(h, "missing").has_value());
  EXPECT_THROW(field_int(h, "bad"), Error);
  EXPECT_THROW(field_string(h, "n"), Error);
  EXPECT_THROW(field_int(h, "missing"), Error);
  EXPECT_NO_THROW(check_context_name("a-b_c.1"));
  EXPECT_THROW(check_context_name("a b"), Error);
  EXPECT_THROW(check_context_name(""), Error);
  EXPECT_THROW(check_context_name(std::string(129, 'a')), Error);
  try {
    RA_FAIL(usage, "bad field");
  } catch (const Error& err) {
    EXPECT_EQ(error_reply(err).header["error"], "bad field");  // no source location for users
  }
  try {
    RA_FAIL(internal, "a bug");
  } catch (const Error& err) {
    EXPECT_NE(error_reply(err).header["error"].get<std::string>().find(".cpp:"),
              std::string::npos);  // kept for a bug report
  }
  const Message e = error_reply("usage", "two\nlines");
  EXPECT_EQ(e.header["error"], "two lines");
  EXPECT_EQ(e.header["ok"], false);
}

TEST(PageMap, DealsEveryTokenOnceInOrder) {
  for (int P : {1, 2, 3, 4})
    for (std::int64_t page : {1, 3, 7, 64})
      for (std::int64_t T : {0, 1, 6, 7, 8, 50, 1000}) {
        const PageMap m{page, P};
        std::vector<std::int64_t> rows(static_cast<std::size_t>(P), 0);
        for (std::int64_t t = 0; t < T; ++t) {
          const int r = m.owner(t);
          ASSERT_EQ(m.local_row(t), rows[static_cast<std::size_t>(r)]) << "token " << t;
          ++rows[static_cast<std::size_t>(r)];
        }
        for (int r = 0; r < P; ++r)
          EXPECT_EQ(m.rows_of(r, T), rows[static_cast<std::size_t>(r)])
              << "P " << P << " page " << page << " T " << T << " rank " << r;
      }
}

TEST(ContextShard, AppendsKeepRowsAndPositions) {
  const PageMap m{7, 3};
  for (int rank = 0; rank < 3; ++rank) {
    ContextShard s(ContextInfo{"c", DType::f32, 2, 3, 0}, m, rank);
    std::int64_t T = 0;
    // Token t, head h, element d holds t * 100 + h * 10 + d.
    for (std::int64_t add : {1, 5, 9, 30, 2, 300}) {
      std::vector<float> k(static_cast<std::size_t>(2 * add * 3)), v(k.size());
      for (std::int64_t h = 0; h < 2; ++h)
        for (std::int64_t i = 0; i < add; ++i)
          for (std::int64_t d = 0; d < 3; ++d) {
            k[static_cast<std::size_t>((h * add + i) * 3 + d)] =
                static_cast<float>((T + i) * 100 + h * 10 + d);
            v[static_cast<std::size_t>((h * add + i) * 3 + d)] =
                -static_cast<float>((T + i) * 100 + h * 10 + d);
          }
      s.append(k.data(), v.data(), add);
      T += add;
      ASSERT_EQ(s.info().tokens, T);
      ASSERT_EQ(s.rows(), m.rows_of(rank, T));
      ASSERT_EQ(s.positions().size(), s.rows());
      for (std::int64_t row = 0; row < s.rows(); ++row) {
        const std::int64_t t = s.positions()[row];
        ASSERT_EQ(m.owner(t), rank);
        ASSERT_EQ(m.local_row(t), row);
        for (std::int64_t h = 0; h < 2; ++h) {
          const float* kr = static_cast<const float*>(s.k_head(h)) + row * 3;
          const float* vr = static_cast<const float*>(s.v_head(h)) + row * 3;
          ASSERT_EQ(kr[2], static_cast<float>(t * 100 + h * 10 + 2)) << "row " << row;
          ASSERT_EQ(vr[0], -static_cast<float>(t * 100 + h * 10)) << "row " << row;
        }
      }
    }
  }
}

TEST(DataPath, StaysInsideTheDataDirectory) {
  namespace fs = std::filesystem;
  const fs::path root =
      fs::temp_directory_path() / ("ringattn-serve-" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root / "data" / "sub");
  fs::create_directories(root / "outside");
  fs::create_symlink(root / "outside", root / "data" / "escape");
  const std::string d = (root / "data").string();
  EXPECT_EQ(resolve_data_path(d, "sub/x.h5"), (fs::canonical(root / "data") / "sub/x.h5").string());
  EXPECT_EQ(resolve_data_path(d, d + "/y.h5"), (fs::canonical(root / "data") / "y.h5").string());
  EXPECT_THROW(resolve_data_path(d, "../outside/x.h5"), Error);
  EXPECT_THROW(resolve_data_path(d, "escape/x.h5"), Error);
  EXPECT_THROW(resolve_data_path(d, "/etc/passwd"), Error);
  EXPECT_THROW(resolve_data_path(d, (root / "datax").string()), Error);
  EXPECT_THROW(resolve_data_path(d, ""), Error);
  EXPECT_THROW(resolve_data_path(d, "."), Error);
  fs::remove_all(root);
}

}  // namespace
