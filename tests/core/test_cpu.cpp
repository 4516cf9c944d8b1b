// The default thread count per rank: a binding launcher's mask wins, then
// Slurm's CPUs per task, then the node's cores shared among its ranks
// (issue: srun --cpus-per-task=1 chose 2 threads per rank on 2 cores).
#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "core/cpu.hpp"

namespace {

using ringattn::affinity_cores;
using ringattn::default_threads;
using ringattn::local_ranks;

// Sets the launcher variables for one check and restores none (each test
// clears what it set).
class LauncherEnv : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* v : kVars) unsetenv(v);
    if (affinity_cores() < static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)))
      GTEST_SKIP() << "this process is bound to some cores only: the mask decides";
  }
  void TearDown() override {
    for (const char* v : kVars) unsetenv(v);
  }
  static constexpr const char* kVars[] = {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS",
                                          "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE",
                                          "SLURM_CPUS_PER_TASK"};
};

TEST_F(LauncherEnv, AloneTakesEveryCore) {
  EXPECT_EQ(local_ranks(), 1);
  EXPECT_EQ(default_threads(), affinity_cores());
}

TEST_F(LauncherEnv, SlurmCpusPerTaskWins) {
  setenv("SLURM_TASKS_PER_NODE", "1", 1);
  setenv("SLURM_CPUS_PER_TASK", "1", 1);
  EXPECT_EQ(default_threads(), 1);
  setenv("SLURM_CPUS_PER_TASK", "100000", 1);  // never more than the mask
  EXPECT_EQ(default_threads(), affinity_cores());
}

TEST_F(LauncherEnv, RanksOnTheNodeShareIt) {
  setenv("SLURM_TASKS_PER_NODE", "2(x3),1", 1);
  EXPECT_EQ(local_ranks(), 2);
  EXPECT_EQ(default_threads(), std::max(1, affinity_cores() / 2));
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "100000", 1);  // Open MPI's own count first
  EXPECT_EQ(local_ranks(), 100000);
  EXPECT_EQ(default_threads(), 1);
}

TEST_F(LauncherEnv, WarnsWhenThreadsTimesRanksExceedTheCores) {
  const int online = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2", 1);
  EXPECT_EQ(ringattn::oversubscription_warning(std::max(1, online / 2)), "");
  EXPECT_NE(ringattn::oversubscription_warning(online).find("exceed"), std::string::npos);
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "100000", 1);
  EXPECT_EQ(ringattn::oversubscription_warning(1), "");  // one thread: the launch's choice
}

}  // namespace
