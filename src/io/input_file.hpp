// The input file: datasets q, k, v shaped [B, H, N, D], validated once and
// agreed by every rank, then read shard by shard with collective MPI-IO.
//
// Opening is two-phase so no rank can hang in a collective that another rank
// skipped (STYLE 8): rank 0 alone opens the file with the serial driver,
// checks everything (signature, datasets, ranks, shapes, types, filters) and
// broadcasts its verdict: a description every rank uses, or one Error every
// rank throws. Only a valid file is then opened collectively (MPI-IO file
// access, collective metadata reads).
//
// Error classes: a missing or unreadable path is `io`; a file that is there
// but unusable (not HDF5, truncated, wrong datasets, shapes or types) is
// `input`; bad arguments (empty dataset names, a partition of the wrong
// length) are `usage`. Every message names the file, the dataset and the
// problem, on one line.
//
// Reads go in the storage type (f32 or IEEE f16), so HDF5 converts nothing
// and keeps the transfer collective (a datatype conversion would make it
// independent); f16 asked for as f32 is widened here, in place.
//
// Includes: mpi.h (MPI_Comm), core/dtype.hpp (DType), io/h5_handle.hpp
// (H5Handle), io/shard_io.hpp (BatchHeadRange, IoModeReport),
// io/file_identity.hpp (FileIdentity), ring/partition.hpp (Partition).
#pragma once

#include <mpi.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "io/file_identity.hpp"
#include "io/h5_handle.hpp"
#include "io/shard_io.hpp"
#include "ring/partition.hpp"

namespace ringattn {

// Dataset names inside the input file (paths from the root are fine).
struct InputNames {
  std::string q = "q";
  std::string k = "k";
  std::string v = "v";
};

enum class InputTensor { q, k, v };
const char* input_tensor_name(InputTensor t);

// How one dataset is stored: what validation looked at, and what `info` prints.
struct DatasetInfo {
  std::string name;                    // path inside the file
  std::array<std::int64_t, 4> dims{};  // [B, H, N, D]
  DType dtype = DType::f32;            // f32 or f16
  bool big_endian = false;             // stored big-endian (reads then convert, independently)
  std::string layout;                  // "contiguous", "chunked" or "compact"
  std::vector<std::int64_t> chunk;     // chunk dims when chunked, else empty
  std::vector<std::string> filters;    // filter pipeline, in order ("deflate", "shuffle", ...)
  std::string file;                    // the file its data lives in, as HDF5 opened it (an
                                       // external link can put it in another one)
};

struct InputInfo {
  FileIdentity file;         // the input as rank 0 saw it (path, inode, size, mtime)
  std::int64_t B = 0;        // batch
  std::int64_t Hq = 0;       // query heads
  std::int64_t Hkv = 0;      // key/value heads (Hq % Hkv == 0)
  std::int64_t Nq = 0;       // query tokens
  std::int64_t Nkv = 0;      // key/value tokens
  std::int64_t D = 0;        // head dim (<= kMaxHeadDim)
  DType dtype = DType::f32;  // storage type of q, k and v alike
  DatasetInfo q, k, v;
  std::vector<FileIdentity> linked;  // other files q, k or v live in (external links)

  const DatasetInfo& dataset(InputTensor t) const {
    return t == InputTensor::q ? q : t == InputTensor::k ? k : v;
  }
};

// Rank 0's validation runs in a forked child process by default, so a file
// that crashes the HDF5 library is an Error(input), not a dead rank. The
// fuzz harness turns this off (it needs the crash, and coverage, in-process).
void set_input_validation_isolated(bool isolated);

// Collective over comm: rank 0 validates and describes `path`, every rank
// returns the same InputInfo or throws the same Error. Opens nothing
// collectively (for `info` and for checks before a run).
InputInfo inspect_input(MPI_Comm comm, const std::string& path, const InputNames& names = {});

// Every file the run reads: the input, then the files it links to.
std::vector<FileIdentity> input_files(const InputInfo& info);

// Collective over comm: rank 0 looks at every input file again; when one
// changed since `info` was taken (size, mtime, inode), every rank throws the
// same Error(input). The job calls it before it records progress and before
// the commit, so a result never mixes two inputs (an input rewritten or
// truncated mid-run reads as other data, or as zeros, without any error).
void check_input_unchanged(MPI_Comm comm, const InputInfo& info);

class InputFile {
 public:
  // Collective: inspect_input, then an MPI-IO open of the valid file on all
  // ranks of comm. comm must outlive the InputFile.
  static InputFile open(MPI_Comm comm, const std::string& path, const InputNames& names = {});

  InputFile(InputFile&&) noexcept = default;
  // No move assignment: it would close the old file before its datasets.
  InputFile& operator=(InputFile&&) = delete;
  // Closes (collectively: every rank destroys its InputFile).
  ~InputFile() = default;

  const InputInfo& info() const { return info_; }

  // Elements read_shard writes for this rank: b_count * h_count * local rows * D.
  std::size_t shard_elements(const Partition& part, const BatchHeadRange& range) const;

  // Collective: every rank of comm calls it with the same tensor, each with
  // its own range (may be empty). Reads this rank's tokens of `t` under
  // `part` (a partition of Nq for q, of Nkv for k and v, over all ranks of
  // comm) for the (batch, head) block `range` into out:
  //   out  (b_count, h_count, part.local_size(rank), D), rows in positions(rank) order
  // mem_type is f32 or the storage type. Throws the same Error on every rank.
  void read_shard(InputTensor t, const Partition& part, const BatchHeadRange& range, DType mem_type,
                  void* out);

  // What HDF5 did in this rank's last read_shard (tests check it stayed collective).
  const IoModeReport& last_io_mode() const { return last_io_; }

  // Collective close; reports failures (the destructor swallows them).
  void close();

 private:
  InputFile() = default;

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  InputInfo info_;
  // Members are destroyed bottom-up, so the datasets close before the file:
  // the MPI-IO driver's close degree is "semi", and H5Fclose fails while
  // objects of the file are open.
  H5Handle file_;
  H5Handle mem_type_;              // storage type in little-endian order: reads convert nothing
  std::array<H5Handle, 3> dsets_;  // q, k, v
  IoModeReport last_io_;
};

}  // namespace ringattn
