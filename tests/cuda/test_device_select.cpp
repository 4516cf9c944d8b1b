// Device selection and the --backend cuda check, on any machine: the
// round-robin mapping of node-local ranks to GPUs, the node-local rank from
// MPI, and one agreed one-line usage error on every rank when --backend cuda
// cannot run here (no CUDA build, or no device on some host). The device
// ring's own refusals are in test_cuda_ring.cpp (that test links the kernel).
#include <gtest/gtest.h>
#include <mpi.h>

#include <string>
#include <vector>

#include "comm/device_select.hpp"
#include "core/error.hpp"
#include "cuda/device.hpp"

#include "../common/mpi_test_util.hpp"

namespace ringattn {
namespace {

using test::on_every_rank;
using test::same_on_every_rank;
using test::world_rank;
using test::world_size;

TEST(DeviceForLocalRank, RoundRobinOverTheNodesDevices) {
  // One rank per GPU.
  for (int i = 0; i < 8; ++i) EXPECT_EQ(device_for_local_rank(i, 8, 8), i);
  // More ranks than GPUs share them: 2 ranks on 1 GPU (the tests' setup),
  // 4 ranks on 2 GPUs alternate.
  EXPECT_EQ(device_for_local_rank(0, 2, 1), 0);
  EXPECT_EQ(device_for_local_rank(1, 2, 1), 0);
  const std::vector<int> four_on_two{0, 1, 0, 1};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(device_for_local_rank(i, 4, 2), four_on_two[i]);
  // Fewer ranks than GPUs leave the rest idle.
  EXPECT_EQ(device_for_local_rank(0, 2, 4), 0);
  EXPECT_EQ(device_for_local_rank(1, 2, 4), 1);
}

TEST(DeviceForLocalRank, RejectsImpossibleArguments) {
  EXPECT_THROW(device_for_local_rank(0, 1, 0), Error);
  EXPECT_THROW(device_for_local_rank(2, 2, 1), Error);
  EXPECT_THROW(device_for_local_rank(-1, 2, 1), Error);
}

TEST(NodeLocalRank, OneNodeHoldsEveryRank) {
  // The tests run on one machine: every rank is node-local, in rank order.
  const NodeLocalRank local = node_local_rank(MPI_COMM_WORLD);
  EXPECT_EQ(local.size, world_size());
  EXPECT_EQ(local.rank, world_rank());
}

TEST(CheckCudaBackend, OneAgreedVerdict) {
  const bool usable = on_every_rank(cuda_built() && cuda_device_count() > 0);
  if (usable) {
    EXPECT_NO_THROW(check_cuda_backend(MPI_COMM_WORLD));
    return;
  }
  std::printf("[rank %d] no CUDA here (%s): expecting the usage error\n", world_rank(),
              cuda_summary().c_str());
  std::string what;
  try {
    check_cuda_backend(MPI_COMM_WORLD);
    ADD_FAILURE() << "check_cuda_backend returned without a usable device";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_class(), ErrorClass::usage);
    what = e.what();
  }
  EXPECT_EQ(what.rfind("--backend cuda: ", 0), 0u) << what;
  EXPECT_EQ(what.find('\n'), std::string::npos) << "one line: " << what;
  if (!cuda_built())
    EXPECT_NE(what.find("built without CUDA"), std::string::npos) << what;
  else
    EXPECT_NE(what.find("no CUDA device on host "), std::string::npos) << what;
  EXPECT_TRUE(same_on_every_rank(what)) << "ranks disagree: " << what;
}

}  // namespace
}  // namespace ringattn
