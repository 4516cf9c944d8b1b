// run_isolated (core/isolated.hpp), the guard every file description runs
// under: each of its five outcomes, from a child that returns, throws,
// crashes, loops or dies silently, and the in-process fallback. Rank-local:
// every rank runs the same cases on its own.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <string>
#include <thread>

#include "core/error.hpp"
#include "core/isolated.hpp"

namespace ringattn::test {
namespace {

constexpr std::chrono::seconds kDeadline{30};

// Forks only where forking is safe (core/isolated.hpp: not under ASan).
class Isolated : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!isolation_fork_safe())
      GTEST_SKIP() << "AddressSanitizer build: its allocator is not fork-safe in a threaded "
                      "process, so run_isolated runs in-process here (core/isolated.hpp)";
  }
};

TEST_F(Isolated, ReturnsTheValueBytesAsTheyWere) {
  const std::string bytes("a\0b\xff\xfe not UTF-8", 14);
  const IsolatedResult r = run_isolated([&] { return bytes; }, kDeadline);
  ASSERT_EQ(r.status, IsolatedResult::Status::done) << r.describe();
  EXPECT_EQ(r.value, bytes);
  EXPECT_EQ(r.describe(), "");
}

TEST_F(Isolated, RunsInAnotherProcess) {
  const pid_t parent = ::getpid();
  const IsolatedResult r = run_isolated([] { return std::to_string(::getpid()); }, kDeadline);
  ASSERT_EQ(r.status, IsolatedResult::Status::done);
  EXPECT_NE(r.value, std::to_string(parent));
}

TEST_F(Isolated, AnErrorComesBackWithItsClassAndText) {
  const IsolatedResult r = run_isolated(
      []() -> std::string { throw Error(ErrorClass::io, "the child's own words"); }, kDeadline);
  ASSERT_EQ(r.status, IsolatedResult::Status::failed);
  EXPECT_EQ(r.error_class, ErrorClass::io);
  EXPECT_EQ(r.message, "the child's own words");
}

TEST_F(Isolated, AnotherExceptionIsInternal) {
  const IsolatedResult r =
      run_isolated([]() -> std::string { throw std::runtime_error("boom"); }, kDeadline);
  ASSERT_EQ(r.status, IsolatedResult::Status::failed);
  EXPECT_EQ(r.error_class, ErrorClass::internal);
  EXPECT_EQ(r.message, "boom");
}

TEST_F(Isolated, ACrashIsNamedBySignalAndTheCallerLives) {
  const IsolatedResult r = run_isolated(
      []() -> std::string {
        std::raise(SIGSEGV);
        return "not reached";
      },
      kDeadline);
  ASSERT_EQ(r.status, IsolatedResult::Status::crashed);
  EXPECT_EQ(r.signal, SIGSEGV);
  EXPECT_NE(r.describe().find("crashed with SIGSEGV"), std::string::npos) << r.describe();
}

TEST_F(Isolated, AChildPastItsDeadlineIsKilled) {
  const auto t0 = std::chrono::steady_clock::now();
  const IsolatedResult r = run_isolated(
      [] {
        std::this_thread::sleep_for(std::chrono::seconds(60));
        return std::string("late");
      },
      std::chrono::seconds(1));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(r.status, IsolatedResult::Status::timed_out);
  EXPECT_LT(took, 20.0);
  EXPECT_EQ(r.describe(), "did not finish within 1 s");
}

TEST_F(Isolated, AChildThatEndsWithoutAVerdictIsLost) {
  const IsolatedResult r = run_isolated([]() -> std::string { ::_exit(3); }, kDeadline);
  ASSERT_EQ(r.status, IsolatedResult::Status::lost);
  EXPECT_NE(r.describe().find("status 3"), std::string::npos) << r.describe();
}

TEST_F(Isolated, OffRunsInThisProcess) {
  set_isolation_enabled(false);
  const IsolatedResult r = run_isolated([] { return std::to_string(::getpid()); }, kDeadline);
  set_isolation_enabled(true);
  ASSERT_EQ(r.status, IsolatedResult::Status::done);
  EXPECT_EQ(r.value, std::to_string(::getpid()));
}

}  // namespace
}  // namespace ringattn::test
