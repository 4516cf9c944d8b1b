// Device selection and the --backend cuda check (see device_select.hpp). The
// mapping and the node-local rank are plain C++ and MPI, built and tested
// everywhere; only cudaSetDevice needs the CUDA build.
#include "comm/device_select.hpp"

#include <unistd.h>

#include <string>

#include "comm/agree.hpp"
#include "core/error.hpp"
#include "cuda/device.hpp"

#ifdef RINGATTN_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace ringattn {

int device_for_local_rank(int local_rank, int local_size, int device_count) {
  RA_CHECK(local_size >= 1 && local_rank >= 0 && local_rank < local_size, internal,
           "node-local rank ", local_rank, " of ", local_size);
  RA_CHECK(device_count >= 1, internal, "device_for_local_rank with ", device_count, " devices");
  return local_rank % device_count;
}

NodeLocalRank node_local_rank(MPI_Comm comm) {
  int rank = 0;
  RA_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MPI_Comm node = MPI_COMM_NULL;
  RA_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
  NodeLocalRank out;
  const int rc_rank = MPI_Comm_rank(node, &out.rank);
  const int rc_size = MPI_Comm_size(node, &out.size);
  MPI_Comm_free(&node);
  RA_MPI_CHECK(rc_rank);
  RA_MPI_CHECK(rc_size);
  return out;
}

int select_cuda_device(MPI_Comm comm) {
  const NodeLocalRank local = node_local_rank(comm);
  const int count = cuda_device_count();
  RA_CHECK(cuda_built(), usage, kNoCudaBuild);
  RA_CHECK(count >= 1, usage, "no CUDA device: ", cuda_summary());
  const int device = device_for_local_rank(local.rank, local.size, count);
#ifdef RINGATTN_HAVE_CUDA
  RA_CUDA_CHECK(cudaSetDevice(device));
#endif
  return device;
}

void check_cuda_backend(MPI_Comm comm) {
  agree(comm, [] {
    if (!cuda_built())
      throw Error(ErrorClass::usage,
                  std::string("--backend cuda: ") + kNoCudaBuild + "; use --backend cpu");
    if (cuda_device_count() == 0) {
      char host[256] = "?";
      gethostname(host, sizeof host - 1);
      throw Error(ErrorClass::usage, std::string("--backend cuda: no CUDA device on host ") + host +
                                         " (" + cuda_summary() + ")");
    }
  });
}

}  // namespace ringattn
