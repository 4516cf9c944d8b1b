// The output file: `o` [B, H, N, D], optionally `lse` [B, H, N], and for a
// backward run the gradients `dq` [B, H, N, D], `dk` and `dv`
// [B, H_kv, N_kv, D] (f32), written shard by shard with collective MPI-IO,
// then committed atomically.
//
// A reader must never see half a result under the target name, and a failed
// run must never destroy an earlier one. So the file is created under a
// temporary name beside the target (same directory, hence same filesystem:
// the final rename is atomic), and only commit() writes the completion mark,
// closes the file on every rank and renames it. Until then the destructor
// removes the temporary file and leaves the target alone. An existing target
// is replaced only when `overwrite` is set, and never when it is the input.
//
// Every member function is collective over the communicator and every
// failure is agreed (comm/agree.hpp): all ranks return, or all throw the same
// Error. The destructor's abort path closes the file, which is collective
// too: it expects every rank to unwind together, which is what an agreed
// Error does. A failure raised on one rank only, elsewhere, must end the job
// (MPI_Abort, the CLI's policy) rather than unwind past a live OutputFile.
//
// Writes that fail. The MPI-IO layer can lose a write's error (Open MPI's
// OMPIO, measured on a full tmpfs at 3 ranks: the aggregator's ENOSPC never
// reached HDF5, which reported success), so no write is trusted until read
// back: every write is hashed in memory, and before a progress record and
// before the commit the file is flushed and every write since the last
// check is read back and compared (one read of the output, against the
// ring's O(N^2) compute). And a full filesystem is found before any work:
// create() reserves the whole file's blocks (fallocate) and refuses, naming
// the OS error, when they do not fit.
//
// One writer. create() takes the output's WriterLock (io/writer_lock.hpp)
// on rank 0 before it looks at the partial file, and holds it until the
// commit, suspend or abort: a second job on the same output is refused.
//
// Partial output. The temporary file has a fixed name, `.<name>.partial`
// beside the target, and records how many of the caller's chunks it holds
// (mark_chunks_done, flushed to disk each time). suspend() closes it and
// keeps it; a later create() with spec.resume reopens it, after checking its
// resume key equals the new run's (else Error usage naming the first
// difference) and that it holds this run's datasets in this run's shapes
// (the gradients exactly when spec.with_gradients; else Error input), and
// chunks_done() says where to continue. Every dataset exists from the
// partial file's creation on, so a resumed file has them all. Without resume, an
// existing partial file is an Error (usage) unless overwrite, which discards
// it. A crashed run (killed, aborted) leaves its partial file too, which a
// resume can continue if HDF5 can still open it. Errors that unwind (agreed
// failures) still remove it: the result is never half-committed.
//
// Error classes: target exists without overwrite, target is the input or a
// directory, bad shapes or arguments: `usage`; output directory missing or
// not writable, HDF5 or filesystem failures: `io`.
//
// Includes: mpi.h (MPI_Comm), core/aligned_buffer.hpp (scratch for f32 ->
// f16), core/dtype.hpp, io/file_identity.hpp, io/h5_describe.hpp (AttrValue,
// the description a resume checks), io/h5_handle.hpp, io/shard_io.hpp
// (BatchHeadRange, IoModeReport), ring/partition.hpp (Partition).
#pragma once

#include <mpi.h>

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/aligned_buffer.hpp"
#include "core/dtype.hpp"
#include "io/file_identity.hpp"
#include "io/h5_describe.hpp"
#include "io/h5_handle.hpp"
#include "io/shard_io.hpp"
#include "io/writer_lock.hpp"
#include "ring/partition.hpp"

namespace ringattn {

struct OutputSpec {
  std::string path;        // the target file
  bool overwrite = false;  // replace an existing target (never the input)
  std::string input_path;  // the input, which must not be the target ("" = no check)
  std::vector<std::string> linked_inputs;  // files the input links to: not targets either
  std::int64_t B = 0;                      // o is [B, H, N, D], lse [B, H, N]
  std::int64_t H = 0;
  std::int64_t N = 0;
  std::int64_t D = 0;
  DType o_dtype = DType::f32;  // f32 or f16 (lse is always f32)
  bool with_lse = false;
  // A backward run: dq [B, H, N, D], dk and dv [B, H_kv, N_kv, D], all f32
  // (H_kv and N_kv are K/V's heads and tokens; only read when with_gradients).
  bool with_gradients = false;
  std::int64_t H_kv = 0, N_kv = 0;
  // Resumable runs (see "Partial output" below). resume_key: what a partial
  // output must have been made with to be continued (a JSON object; the
  // caller decides which settings change the result bits).
  bool resume = false;
  std::string resume_key;
  // How many chunks the caller will write: a partial file's record of chunks
  // done must lie in [0, chunks] (0 = no check, for callers without chunks).
  std::int64_t chunks = 0;
};

// The output's datasets (README, "Output"; `info` and `verify` read them by these names).
inline constexpr const char* kODataset = "o";
inline constexpr const char* kLseDataset = "lse";
inline constexpr const char* kDqDataset = "dq";
inline constexpr const char* kDkDataset = "dk";
inline constexpr const char* kDvDataset = "dv";

// The attribute written last, by commit(): int64 1 on a complete file.
inline constexpr const char* kCompleteAttribute = "complete";
// Attributes of a partial file only (removed by commit): the resume key and
// the number of chunks written.
inline constexpr const char* kResumeKeyAttribute = "resume_key";
inline constexpr const char* kChunksDoneAttribute = "chunks_done";

// The fixed name of an output's partial file: `.<name>.partial` beside it
// (shortened for a long name: see hidden_sibling).
std::string partial_output_path(const std::string& target);

// Root attributes that trace a result to its input: <prefix>path, size,
// mtime_ns, device, inode (what FileIdentity holds).
std::vector<std::pair<std::string, AttrValue>> identity_attributes(
    const FileIdentity& file, const std::string& prefix = "input_");

class OutputFile {
 public:
  // Collective: checks the target (agreed), then creates the temporary file
  // and its datasets on every rank of comm. comm must outlive the OutputFile.
  static OutputFile create(MPI_Comm comm, const OutputSpec& spec);

  OutputFile(OutputFile&& o) noexcept;
  OutputFile& operator=(OutputFile&&) = delete;
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  // Not committed: abort() (the temporary file goes, the target stays).
  ~OutputFile();

  const OutputSpec& spec() const { return spec_; }
  // Where the data lives until commit() (absolute or relative like spec.path).
  const std::string& temp_path() const { return temp_path_; }
  bool committed() const { return state_ == State::committed; }
  // Chunks the file already holds: 0 for a new file, the recorded count for
  // a resumed one. resumed(): create() continued a partial file.
  std::int64_t chunks_done() const { return chunks_done_; }
  bool resumed() const { return resumed_; }

  // Collective: records that the first n chunks are written, and flushes
  // data and metadata to the file (a stop or crash after this keeps them).
  void mark_chunks_done(std::int64_t n);
  // Collective: closes the partial file and keeps it for a resume.
  void suspend();

  // Collective (same rules as InputFile::read_shard, mirrored): writes this
  // rank's tokens under `part` (a partition of N over all ranks of comm) for
  // the (batch, head) block `range`:
  //   data  (b_count, h_count, part.local_size(rank), D), rows in positions(rank) order
  // mem_type is f32 or spec.o_dtype (f32 data for an f16 `o` is rounded here,
  // to nearest even, so the transfer itself converts nothing and stays collective).
  void write_o(const Partition& part, const BatchHeadRange& range, DType mem_type,
               const void* data);
  //   lse  (b_count, h_count, part.local_size(rank)); only when spec.with_lse.
  void write_lse(const Partition& part, const BatchHeadRange& range, const float* lse);
  // The gradients, f32, only when spec.with_gradients (same rules as write_o):
  //   dq    (b_count, h_count, qpart.local_size(rank), D): qpart over N, range over H
  void write_dq(const Partition& qpart, const BatchHeadRange& q_range, const float* data);
  //   dk/dv (b_count, h_count, kvpart.local_size(rank), D), rows in
  //         kvpart.positions(rank) order: kvpart over N_kv, range over H_kv
  void write_dk(const Partition& kvpart, const BatchHeadRange& kv_range, const float* data);
  void write_dv(const Partition& kvpart, const BatchHeadRange& kv_range, const float* data);

  // Collective: sets (or replaces) a root attribute. Rank 0's name and value
  // are the ones written, so ranks cannot write diverging metadata.
  void set_attribute(const std::string& name, const AttrValue& value);
  void set_attributes(const std::vector<std::pair<std::string, AttrValue>>& attrs);

  // Collective: completion mark, close on every rank, then rank 0 renames the
  // temporary file to the target (atomically; without overwrite, failing if
  // a target appeared meanwhile). After an Error the temporary file is gone.
  void commit();
  // Collective: closes and removes the temporary file. Idempotent.
  void abort() noexcept;

  // What HDF5 did in this rank's last write (tests check it stayed collective).
  const IoModeReport& last_io_mode() const { return last_io_; }

 private:
  enum class State { none, open, committed, suspended };
  // The datasets, in the order of dsets_ (kODataset, ... name them).
  enum class Slot : std::size_t { o, lse, dq, dk, dv };
  static constexpr std::size_t kSlots = 5;
  OutputFile() = default;
  std::string context() const;
  void reopen_partial();
  void open_datasets();
  void close_datasets();
  void reset_datasets() noexcept;
  void write(Slot slot, const Partition& part, const BatchHeadRange& range, DType mem_type,
             const void* data);
  void flush();
  void reserve_space();
  void verify_pending_writes();

  // A write not yet read back: where it went and the hash of its bytes.
  struct PendingWrite {
    Slot slot = Slot::o;
    Positions rows;
    BatchHeadRange range;
    std::size_t bytes = 0;
    std::uint64_t hash = 0;
  };

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  OutputSpec spec_;
  std::string temp_path_;
  State state_ = State::none;
  IoModeReport last_io_;
  std::int64_t chunks_done_ = 0;
  bool resumed_ = false;
  AlignedBuffer<std::uint16_t> scratch_;  // f32 data rounded to f16 for an f16 `o`
  std::vector<PendingWrite> pending_;     // written since the last read-back check
  AlignedBuffer<char> readback_;          // one pending write's bytes, read back
  WriterLock lock_;                       // rank 0: this output's one writer
  // Destroyed bottom-up: the datasets close before the file.
  H5Handle file_;
  H5Handle o_type_;                     // spec.o_dtype, little-endian IEEE
  std::array<H5Handle, kSlots> dsets_;  // by Slot; closed: not in this file
};

}  // namespace ringattn
