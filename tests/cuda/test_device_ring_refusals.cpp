// What the device ring (ring/device_ring.hpp) refuses, on any machine, with
// CUDA built or not: one usage error, the same on every rank. Apart from
// test_cuda_ring so that these run (and pass) where that one has nothing to
// run and reports Skipped.
#include <gtest/gtest.h>
#include <mpi.h>

#include <memory>
#include <string>

#include "core/error.hpp"
#include "cuda/device.hpp"
#include "ring/device_ring.hpp"

#include "../common/mpi_test_util.hpp"

namespace ringattn {
namespace {

using test::on_every_rank;
using test::same_on_every_rank;

// The message make_device_ring(transport, timeout) throws, checked to be a
// usage error agreed by every rank ("" when it throws nothing). Collective.
std::string refusal(const std::string& transport, double timeout_s) {
  std::string what;
  try {
    const std::unique_ptr<Ring> ring = make_device_ring(MPI_COMM_WORLD, transport, timeout_s);
    ADD_FAILURE() << "make_device_ring(" << transport << ", " << timeout_s << " s) was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_class(), ErrorClass::usage) << e.what();
    what = e.what();
  }
  EXPECT_TRUE(same_on_every_rank(what)) << "ranks disagree: " << what;
  return what;
}

// The arguments are checked before the build or a device is needed, so in
// a build without CUDA, or on a host without a GPU, a wrong transport is
// still reported as what it is.
TEST(DeviceRingRefuses, AnUnknownTransport) {
  const std::string what = refusal("tcp", 0);
  EXPECT_NE(what.find("--transport tcp: the device ring moves blocks with nccl or mpi"),
            std::string::npos)
      << what;
  EXPECT_EQ(what.find("built without CUDA"), std::string::npos) << what;
  EXPECT_EQ(what.find("no CUDA device"), std::string::npos) << what;
}

TEST(DeviceRingRefuses, ANegativeTimeout) {
  const std::string what = refusal("mpi", -1);
  EXPECT_NE(what.find("communication timeout -1 s < 0"), std::string::npos) << what;
  EXPECT_EQ(what.find("built without CUDA"), std::string::npos) << what;
}

TEST(DeviceRingRefuses, AHostWithoutDevice) {
  if (on_every_rank(cuda_device_count() > 0))
    GTEST_SKIP() << "every rank has a CUDA device: nothing to refuse";
  for (const char* transport : {"nccl", "mpi"}) {
    const std::string what = refusal(transport, 10);
    if (!cuda_built()) {
      EXPECT_NE(what.find("built without CUDA"), std::string::npos) << what;
    }
  }
}

}  // namespace
}  // namespace ringattn
