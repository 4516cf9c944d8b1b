// Which GPU a rank uses, and one verdict on whether `--backend cuda` can run.
//
// Ranks on one node share its devices round robin: local rank i takes device
// i mod (devices on the node). More ranks than GPUs on a node therefore share
// a GPU (two ranks on one GPU is how the GPU tests run on a one-GPU machine);
// NCCL cannot put two ranks of one communicator on one GPU, so sharing needs
// the MPI transport (see ring/device_ring.hpp). CUDA_VISIBLE_DEVICES narrows the
// devices a rank sees before this mapping applies.
//
// Declared whether or not the CUDA parts are built; the mapping is pure C++
// and the MPI parts only call CUDA in the CUDA build.
//
// Includes: mpi.h (MPI_Comm).
#pragma once

#include <mpi.h>

namespace ringattn {

// Round robin: local_rank mod device_count. Requires 0 <= local_rank <
// local_size and device_count >= 1 (throws Error(internal) otherwise).
// local_size > device_count means ranks share devices.
int device_for_local_rank(int local_rank, int local_size, int device_count);

// This rank's place among the ranks of comm on the same node
// (MPI_Comm_split_type with MPI_COMM_TYPE_SHARED). Collective over comm.
struct NodeLocalRank {
  int rank = 0;  // 0 .. size-1
  int size = 1;  // ranks of comm on this node
};
NodeLocalRank node_local_rank(MPI_Comm comm);

// Picks this rank's device with device_for_local_rank over the node-local rank
// and makes it current (cudaSetDevice); returns its index. Collective over
// comm. Throws Error(usage) when this process sees no device or the build has
// no CUDA: call check_cuda_backend first so that every rank fails alike.
int select_cuda_device(MPI_Comm comm);

// Collective over comm: returns on every rank when every rank sees at least
// one CUDA device in a CUDA build; otherwise throws the same one-line
// Error(usage) on every rank (comm/agree.hpp), naming the first rank's problem:
//   "--backend cuda: no CUDA device on host H (<cuda_summary()>)" or
//   "--backend cuda: this ringattn was built without CUDA (...)".
void check_cuda_backend(MPI_Comm comm);

}  // namespace ringattn
