// The input file: datasets q, k, v shaped [B, H, N, D], validated once and
// agreed by every rank, then read shard by shard with collective MPI-IO. A
// backward run also reads the upstream gradient dO (shaped like q) and, when
// it reuses a forward, that forward's o (like q) and lse [B, H, N].
//
// Opening is two-phase so no rank can hang in a collective that another rank
// skipped (STYLE 8): rank 0 alone describes the file (io/h5_describe.hpp: in
// a child process, with the serial driver), runs the checks below over the
// description and broadcasts its verdict: an InputInfo every rank uses, or
// one Error every rank throws. Only a valid file is then opened collectively
// (h5_open_parallel).
//
// The checks, per dataset: present (a link that resolves to nothing is "no
// such dataset" too), a dataset, 4-d with every length > 0, IEEE f32 or f16
// in either byte order, a layout HDF5 reads in parallel (contiguous,
// chunked, compact), filters this HDF5 can decode, no external raw files,
// head dim <= kMaxHeadDim, a byte count that fits int64, and a linked file's
// name short enough for MPI-IO; together: one element type, B and D alike,
// k and v alike, H_q % H_kv == 0. The backward's datasets (only those
// InputNames names) pass the same per-dataset checks (lse with 3 dimensions
// [B, H, N]) with an element type of their own, f32 or f16 whatever q's is
// (dO often comes from another framework than q), and must be shaped exactly
// like q (dO, o) or like q without D (lse); a missing one's message names the
// setting that asked for it.
//
// Error classes: a missing or unreadable path, one that is not a regular
// file, or a file locked by a writer is `io`; a file that is there but
// unusable (not HDF5, truncated, damaged, wrong datasets, shapes or types) is
// `input`; bad arguments (empty dataset names, a partition of the wrong
// length) are `usage`. Every message names the file, the dataset and the
// problem, on one line.
//
// Reads go in the storage type (f32 or IEEE f16), so HDF5 converts nothing
// and keeps the transfer collective (a datatype conversion would make it
// independent); f16 asked for as f32 is widened here, in place. A dataset
// with a filter that may leave chunks unfiltered (szip does, for a chunk it
// cannot shrink) is read with independent transfers: HDF5 1.10's collective
// path decodes such a chunk anyway and fails.
//
// Includes: mpi.h (MPI_Comm), core/dtype.hpp (DType), core/shape.hpp
// (AttnShape), io/h5_describe.hpp (H5DatasetDesc, H5FileDesc),
// io/h5_handle.hpp (H5Handle), io/shard_io.hpp (BatchHeadRange,
// IoModeReport), io/file_identity.hpp (FileIdentity), ring/partition.hpp
// (Partition).
#pragma once

#include <mpi.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/documents.hpp"
#include "core/dtype.hpp"
#include "core/shape.hpp"
#include "io/file_identity.hpp"
#include "io/h5_describe.hpp"
#include "io/h5_handle.hpp"
#include "io/shard_io.hpp"
#include "ring/partition.hpp"

namespace ringattn {

// Dataset names inside the input file (paths from the root are fine).
struct InputNames {
  std::string q = "q";
  std::string k = "k";
  std::string v = "v";
  // The backward's inputs; empty: not read (and not checked). The job sets
  // d_o (--do-name, "do") for a backward run, o = "o" and lse = "lse" with
  // --reuse-forward.
  std::string d_o{};  // the upstream gradient dO, shaped like q
  std::string o{};    // a forward's output, shaped like q
  std::string lse{};  // a forward's log-sum-exp [B, H, N]
};

// The upstream gradient's usual name: what `gen --backward` writes and the
// job's --do-name defaults to.
inline constexpr const char* kDoDataset = "do";

// The root datasets of packed sequences' offsets (README, "Packed sequences"; core/documents.hpp).
inline constexpr const char* kCuSeqlens = "cu_seqlens";     // self-attention
inline constexpr const char* kCuSeqlensQ = "cu_seqlens_q";  // cross-attention: over q's tokens
inline constexpr const char* kCuSeqlensK = "cu_seqlens_k";  //   and over k's and v's
// The converters' token ids (README, "Dataset files"): integers [B, N] beside q.
inline constexpr const char* kTokens = "tokens";

enum class InputTensor { q, k, v, d_o, o, lse };
inline constexpr std::size_t kInputTensors = 6;

struct InputInfo {
  FileIdentity file;  // the input as rank 0 saw it (path, inode, size, mtime)
  AttnShape shape;    // q [batch, heads_q, tokens_q, head_dim], k/v [.., heads_kv, tokens_kv, ..]
  DType dtype = DType::f32;  // storage type of q, k and v alike
  H5DatasetDesc q, k, v;     // how each is stored (the description the checks passed)
  // The backward's inputs when InputNames named them, else H5Object::missing;
  // each has its own storage type (dtype_of).
  H5DatasetDesc d_o, o, lse;
  std::vector<FileIdentity> linked;  // other files the datasets live in (external links)
  // Packed sequences (core/documents.hpp): the offsets' datasets, `cu_seqlens` for
  // self-attention (both the same), `cu_seqlens_q` and `cu_seqlens_k` for
  // cross-attention; H5Object::missing when the input is dense.
  H5DatasetDesc cu_q, cu_k;
  // The token ids (kTokens) as described, H5Object::missing when absent;
  // checked only where read (read_input_tokens): a run does not need them.
  H5DatasetDesc tokens;

  bool packed() const { return cu_q.object == H5Object::dataset; }
  // Whether tensor t is in the file and was asked for (q, k, v always).
  bool has(InputTensor t) const { return dataset(t).object == H5Object::dataset; }

  const H5DatasetDesc& dataset(InputTensor t) const {
    switch (t) {
      case InputTensor::q:
        return q;
      case InputTensor::k:
        return k;
      case InputTensor::v:
        return v;
      case InputTensor::d_o:
        return d_o;
      case InputTensor::o:
        return o;
      case InputTensor::lse:
        break;
    }
    return lse;
  }
  // Storage type of tensor t (f32 or f16; `dtype` for q, k, v). Only for a
  // tensor the file has (has(t)); f32 otherwise.
  DType dtype_of(InputTensor t) const;
};

// What describe_h5_file is asked for an input: the datasets by name (no
// attributes, no other root objects; the root's names come anyway).
H5DescribeWhat input_description_request(const InputNames& names);

// The checks above, over a description made with input_description_request
// (or one that holds at least that). Rank-local: takes the identities of
// the input and of the files it links to now. Throws the Error rank 0 would.
InputInfo check_input(const H5FileDesc& d, const InputNames& names = {});

// Collective over comm: rank 0 describes `path` (in a child process) and
// checks it, every rank returns the same InputInfo or throws the same Error.
// Opens nothing collectively (for `verify` and for checks before a run).
InputInfo inspect_input(MPI_Comm comm, const std::string& path, const InputNames& names = {});

// A packed input's documents, read on this process alone (verify, info) from
// an input inspect_input accepted; one document when it is dense. Offsets
// that break check_cu_seqlens are Error(usage) naming the dataset.
Documents read_input_documents(const InputInfo& info);

// The token ids of an input inspect_input accepted, read on this process
// alone: (B, N_q) int64, row-major. Error(usage) when the input has no
// `tokens` dataset or it is not integers shaped [B, N_q].
std::vector<std::int64_t> read_input_tokens(const InputInfo& info);

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
  // The packed documents (read and checked at open); dense: one document.
  const Documents& documents() const { return docs_; }

  // Elements read_shard writes for this rank: b_count * h_count * local rows * D.
  std::size_t shard_elements(const Partition& part, const BatchHeadRange& range) const;
  // The same for tensor t: without the D factor for lse.
  std::size_t shard_elements(InputTensor t, const Partition& part,
                             const BatchHeadRange& range) const;

  // Collective: every rank of comm calls it with the same tensor, each with
  // its own range (may be empty). Reads this rank's tokens of `t` under
  // `part` (a partition of Nq for q, d_o, o and lse, of Nkv for k and v,
  // over all ranks of comm) for the (batch, head) block `range` into out:
  //   out  (b_count, h_count, part.local_size(rank), D), rows in positions(rank) order
  //   lse: (b_count, h_count, part.local_size(rank))
  // mem_type is f32 or the tensor's storage type (dtype_of). A tensor that
  // was not asked for at open is Error(usage). Throws the same Error on every rank.
  // rows_of >= 0 reads the tokens rank rows_of holds instead (a resumed
  // ring step starts from the block another rank sent there).
  void read_shard(InputTensor t, const Partition& part, const BatchHeadRange& range, DType mem_type,
                  void* out, int rows_of = -1);

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
  Documents docs_;
  // Members are destroyed bottom-up, so the datasets close before the file:
  // the MPI-IO driver's close degree is "semi", and H5Fclose fails while
  // objects of the file are open.
  H5Handle file_;
  // Per InputTensor: the storage type in little-endian order (reads convert
  // nothing), the dataset (closed: not asked for), and false when it is read
  // independently (see above).
  std::array<H5Handle, kInputTensors> mem_types_;
  std::array<H5Handle, kInputTensors> dsets_;
  std::array<bool, kInputTensors> collective_{true, true, true, true, true, true};
  IoModeReport last_io_;
};

}  // namespace ringattn
