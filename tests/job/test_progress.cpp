// Progress reporting (job/progress.hpp): the line form a batch log gets
// (timestamps, what the rate means, a resumed run's rate and time left from
// its own work only), the bar, none, and how the default style finds a
// terminal behind a launcher's pipe.
#include "job/progress.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <regex>
#include <string>
#include <thread>

namespace ringattn::test {
namespace {

// What a Progress wrote to its file.
class Captured {
 public:
  Captured() : f_(std::tmpfile()) {}
  ~Captured() { std::fclose(f_); }
  Captured(const Captured&) = delete;
  Captured& operator=(const Captured&) = delete;
  std::FILE* file() { return f_; }
  std::string text() {
    std::fflush(f_);
    std::rewind(f_);
    std::string s;
    char buf[4096];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f_)) > 0;) s.append(buf, n);
    return s;
  }

 private:
  std::FILE* f_;
};

const std::regex kTimestamp(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} )");

TEST(Progress, LinesAreTimestampedAndSayWhatTheRateCounts) {
  Captured out;
  Progress p(true, ProgressStyle::lines, 4, 1000, 0.0, out.file());
  p.begin(0);
  p.update(1);
  p.update(4);
  const std::string text = out.text();
  EXPECT_NE(text.find("4 chunks of 1000 query rows (tokens x heads)"), std::string::npos) << text;
  EXPECT_NE(text.find("rate: query rows finished per second by this run"), std::string::npos);
  EXPECT_NE(text.find("progress: 25.0% (chunk 1.00 of 4)"), std::string::npos) << text;
  EXPECT_NE(text.find("progress: 100.0% (chunk 4.00 of 4)"), std::string::npos) << text;
  std::size_t lines = 0;
  for (std::size_t at = 0; (at = text.find('\n', at)) != std::string::npos; ++at) ++lines;
  EXPECT_EQ(lines, 3u) << text;
  // Every line starts with a timestamp.
  for (std::size_t start = 0; start < text.size();) {
    const std::size_t end = text.find('\n', start);
    const std::string line = text.substr(start, end - start);
    EXPECT_TRUE(std::regex_search(line, kTimestamp, std::regex_constants::match_continuous))
        << line;
    start = end + 1;
  }
  EXPECT_EQ(text.find('\r'), std::string::npos);
}

TEST(Progress, LinesComeAtMostEveryIntervalButTheLastAlways) {
  Captured out;
  Progress p(true, ProgressStyle::lines, 100, 10, 3600.0, out.file());
  p.begin(0);
  for (int i = 1; i <= 100; ++i) p.update(i);
  const std::string text = out.text();
  // The header, the first update (nothing printed before it), the last.
  EXPECT_NE(text.find("(chunk 1.00 of 100)"), std::string::npos) << text;
  EXPECT_EQ(text.find("(chunk 2.00 of 100)"), std::string::npos) << text;
  EXPECT_NE(text.find("(chunk 100.00 of 100)"), std::string::npos) << text;
}

// The rate a line prints, in query rows per second.
double rate_of(const std::string& line) {
  std::smatch m;
  EXPECT_TRUE(std::regex_search(line, m, std::regex(R"(, ([0-9.e+]+) query rows/s)"))) << line;
  return m.empty() ? -1 : std::stod(m[1]);
}

TEST(Progress, AResumedRunsRateAndEtaCountOnlyItsOwnWork) {
  Captured out;
  // 10 chunks of 1e6 rows; 8 were done by an earlier run.
  Progress p(true, ProgressStyle::lines, 10, 1e6, 0.0, out.file());
  p.begin(8);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  p.update(9);  // one chunk in about 0.2 s: about 5e6 rows/s, ETA about 0.2 s
  const std::string text = out.text();
  EXPECT_NE(text.find(", 8 done by an earlier run"), std::string::npos) << text;
  const std::string line = text.substr(text.find("progress: 90.0%"));
  const double rate = rate_of(line);
  // Counting the earlier run's chunks would give 9 chunks in 0.2 s: 4.5e7.
  EXPECT_GT(rate, 1e6) << line;
  EXPECT_LT(rate, 5.5e6) << line;
  EXPECT_NE(line.find("ETA 0:00:00"), std::string::npos) << line;
}

TEST(Progress, NoWorkYetGivesNoEta) {
  Captured out;
  Progress p(true, ProgressStyle::lines, 2, 1, 0.0, out.file());
  p.begin(1);
  p.update(1);
  EXPECT_NE(out.text().find("ETA --"), std::string::npos) << out.text();
}

TEST(Progress, BarRedrawsInPlaceAndEndsItsLine) {
  Captured out;
  Progress p(true, ProgressStyle::bar, 2, 1, 0.0, out.file());
  p.begin(0);
  p.update(1);
  p.update(2);
  p.finish();
  const std::string text = out.text();
  EXPECT_EQ(text.front(), '\r') << text;
  EXPECT_NE(text.find("[###############...............]  50.0%"), std::string::npos) << text;
  EXPECT_NE(text.find("[##############################] 100.0%"), std::string::npos) << text;
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(text.find("progress:"), std::string::npos);  // no header line either
}

TEST(Progress, NoneAndOtherRanksPrintNothingButTheObserverHears) {
  Captured out;
  int heard = 0;
  set_progress_observer([&](double, std::int64_t chunks) {
    EXPECT_EQ(chunks, 3);
    ++heard;
  });
  {
    Progress none(true, ProgressStyle::none, 3, 1, 0.0, out.file());
    none.begin(0);
    none.update(3);
    none.finish();
    Progress other_rank(false, ProgressStyle::lines, 3, 1, 0.0, out.file());
    other_rank.begin(0);
    other_rank.update(3);
  }
  set_progress_observer(nullptr);
  EXPECT_EQ(out.text(), "");
  EXPECT_EQ(heard, 1);  // the enabled one only
}

// A process tree: pid -> (parent, what its fd 2 links to).
struct Tree {
  std::map<int, std::pair<int, std::string>> procs;
  ProcessView view() const {
    return {[this](int pid) { return procs.count(pid) ? procs.at(pid).first : 0; },
            [this](int pid) { return procs.count(pid) ? procs.at(pid).second : std::string(); }};
  }
};

TEST(ProgressStyleDefault, FindsTheTerminalBehindALaunchersPipe) {
  // rank 0 (pipe) -> mpirun (the user's terminal)
  Tree mpirun{{{30, {20, "pipe:[123]"}}, {20, {10, "/dev/pts/4"}}, {10, {1, "/dev/pts/4"}}}};
  EXPECT_TRUE(stderr_reaches_terminal(30, mpirun.view()));
  // the same launch with mpirun's stderr sent to a log file
  Tree logged{{{30, {20, "pipe:[123]"}}, {20, {10, "/home/u/job.log"}}, {10, {1, "/dev/pts/4"}}}};
  EXPECT_FALSE(stderr_reaches_terminal(30, logged.view()));
  // srun: the step daemon holds no terminal
  Tree srun{{{30, {20, "pipe:[9]"}}, {20, {1, "/dev/null"}}}};
  EXPECT_FALSE(stderr_reaches_terminal(30, srun.view()));
  // a parent we may not look at
  Tree hidden{{{30, {20, "pipe:[9]"}}}};
  EXPECT_FALSE(stderr_reaches_terminal(30, hidden.view()));
  // pipes all the way up (a logger's chain): not a person's terminal
  Tree pipes;
  for (int pid = 2; pid < 40; ++pid) pipes.procs[pid] = {pid - 1, "pipe:[1]"};
  pipes.procs[1] = {0, "/dev/pts/0"};
  EXPECT_FALSE(stderr_reaches_terminal(39, pipes.view()));
  // a terminal right away
  Tree direct{{{30, {20, "/dev/pts/1"}}}};
  EXPECT_TRUE(stderr_reaches_terminal(30, direct.view()));
}

}  // namespace
}  // namespace ringattn::test
