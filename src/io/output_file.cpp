// Target checks, the temporary file, collective shard writes, root
// attributes and the atomic commit of the output file (see output_file.hpp).
#include "io/output_file.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "comm/agree.hpp"
#include "core/error.hpp"
#include "core/message_text.hpp"
#include "io/chunk_state.hpp"
#include "io/file_identity.hpp"

namespace ringattn {

namespace {

constexpr int kRoot = 0;

// About 1 MiB per chunk; see create_datasets for why.
constexpr std::int64_t kChunkBytes = std::int64_t{1} << 20;

// Rank 0's string on every rank.
void broadcast_string(MPI_Comm comm, std::string& s) {
  long long n = static_cast<long long>(s.size());
  RA_MPI_CHECK(MPI_Bcast(&n, 1, MPI_LONG_LONG, kRoot, comm));
  s.resize(static_cast<std::size_t>(n));
  if (n > 0) RA_MPI_CHECK(MPI_Bcast(s.data(), static_cast<int>(n), MPI_CHAR, kRoot, comm));
}

enum class Plan : int { create = 0, resume = 1 };

// What each of the file's datasets is, by OutputFile::Slot: its name, heads
// and tokens (dims [B, heads, tokens, D], or [B, heads, tokens] for lse),
// elements per token row, stored type, whether this run's file has it, and
// whether it is a gradient.
struct DatasetShape {
  const char* name;
  std::int64_t heads, tokens, row;  // row: D, or 1 for lse (3-d)
  bool with_d;
  DType stored;
  bool present;
  bool gradient;
  std::vector<std::int64_t> dims(const OutputSpec& s) const {
    if (!with_d) return {s.B, heads, tokens};
    return {s.B, heads, tokens, row};
  }
};
constexpr std::size_t kDatasets = 5;
DatasetShape dataset_shape(const OutputSpec& s, std::size_t slot) {
  switch (slot) {
    case 0:
      return {kODataset, s.H, s.N, s.D, true, s.o_dtype, true, false};
    case 1:
      return {kLseDataset, s.H, s.N, 1, false, DType::f32, s.with_lse, false};
    case 2:
      return {kDqDataset, s.H, s.N, s.D, true, DType::f32, s.with_gradients, true};
    case 3:
      return {kDkDataset, s.H_kv, s.N_kv, s.D, true, DType::f32, s.with_gradients, true};
    default:
      return {kDvDataset, s.H_kv, s.N_kv, s.D, true, DType::f32, s.with_gradients, true};
  }
}

// Everything the job will write: every dataset, and room for the attributes.
constexpr std::int64_t kMetadataHeadroom = std::int64_t{256} << 10;
double result_bytes(const OutputSpec& s) {
  double bytes = static_cast<double>(kMetadataHeadroom);
  for (std::size_t i = 0; i < kDatasets; ++i) {
    const DatasetShape d = dataset_shape(s, i);
    if (!d.present) continue;
    double n = static_cast<double>(dtype_size(d.stored));
    for (const std::int64_t x : d.dims(s)) n *= static_cast<double>(x);
    bytes += n;
  }
  return bytes;
}

// "; the filesystem of DIR is full (No space left on device)" when it is,
// else "": a failed or lost write on a full disk says why.
std::string full_disk_hint(const std::string& path) {
  struct statvfs fs {};
  const std::string dir = directory_of(path);
  if (::statvfs(dir.c_str(), &fs) != 0) return "";
  const double avail = static_cast<double>(fs.f_bavail) * static_cast<double>(fs.f_frsize);
  if (avail >= 1048576.0) return "";
  return "; the filesystem of '" + dir + "' is full (" + std::strerror(ENOSPC) + ")";
}

// Runs fn; an Error it throws gains full_disk_hint(path), before the
// message's " [file:line, host:rank]" tail.
template <class Fn>
void with_disk_hint(const std::string& path, Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    std::string msg = e.what();
    const auto tail = msg.rfind(" [");
    msg.insert(tail == std::string::npos ? msg.size() : tail, full_disk_hint(path));
    throw Error(e.error_class(), msg);
  }
}

// Whether path names the input or a file it links to (both must exist).
bool names_an_input(const OutputSpec& s, const std::string& path) {
  if (::access(path.c_str(), F_OK) != 0) return false;
  std::vector<std::string> inputs = s.linked_inputs;
  if (!s.input_path.empty()) inputs.push_back(s.input_path);
  for (const auto& in : inputs)
    if (::access(in.c_str(), F_OK) == 0 && same_file(file_identity(path), file_identity(in)))
      return true;
  return false;
}

// Test hook: behave as on a filesystem that neither reports its free space
// nor reserves blocks (some network filesystems), so the tests can show that
// the read-back checks alone still catch a lost write.
bool space_checks_skipped() {
  const char* e = std::getenv("RINGATTN_TEST_SKIP_SPACE_CHECKS");
  return e != nullptr && std::string(e) == "1";
}

// Rank 0, before the partial file exists: the result fits on its filesystem.
void check_space(const OutputSpec& s, const std::string& ctx) {
  if (space_checks_skipped()) return;
  struct statvfs fs {};
  const std::string dir = directory_of(s.path);
  if (::statvfs(dir.c_str(), &fs) != 0) return;  // the reservation will tell
  const double avail = static_cast<double>(fs.f_bavail) * static_cast<double>(fs.f_frsize);
  const double need = result_bytes(s);
  RA_CHECK(avail >= need, io, ctx, ": no space for the result: it needs ", binary_bytes(need),
           " and '", dir, "' has ", binary_bytes(avail), " free (", std::strerror(ENOSPC), ")");
}

// Rank 0: everything about the target that can be known before writing,
// under the writer lock; returns whether to create the partial file or
// continue it. Nothing on disk changes before every check passed.
Plan check_target(const OutputSpec& s, std::string& temp, WriterLock& lock) {
  const std::string ctx = "output file '" + s.path + "'";
  RA_CHECK(!s.path.empty(), usage, "output file: no path given");
  RA_CHECK(s.B > 0 && s.H > 0 && s.N > 0 && s.D > 0, usage, ctx,
           ": dataset shape must be positive, got [", s.B, ", ", s.H, ", ", s.N, ", ", s.D, "]");
  RA_CHECK(s.o_dtype == DType::f32 || s.o_dtype == DType::f16, usage, ctx,
           ": o must be f32 or f16, not ", dtype_name(s.o_dtype));
  RA_CHECK(!s.with_gradients || (s.H_kv > 0 && s.N_kv > 0), usage, ctx,
           ": gradient shape must be positive, got dk and dv [", s.B, ", ", s.H_kv, ", ", s.N_kv,
           ", ", s.D, "]");

  check_new_file_target(s.path, s.overwrite, s.input_path, ctx);
  RA_CHECK(!names_an_input(s, s.path), usage, ctx,
           ": is a file the input links to; choose another output path");
  temp = partial_output_path(s.path);
  for (const std::string& own : {temp, writer_lock_path(s.path), chunk_state_path(s.path)})
    RA_CHECK(!names_an_input(s, own), usage, ctx, ": '", own,
             "', where the run keeps its own state, is the input; move the input");
  lock = WriterLock::acquire(s.path, ctx);

  struct stat st {};
  if (::lstat(temp.c_str(), &st) != 0) {
    check_space(s, ctx);
    return Plan::create;
  }
  RA_CHECK(S_ISREG(st.st_mode), usage, ctx, ": its partial output '", temp,
           "' is not a regular file (it is ", file_kind_name(st.st_mode), "); remove it");
  if (s.resume) return Plan::resume;
  RA_CHECK(s.overwrite, usage, ctx, ": an interrupted run left its partial output '", temp,
           "'; continue it with --resume, or start again with --overwrite (which deletes it)");
  RA_CHECK(::unlink(temp.c_str()) == 0, io, ctx, ": cannot delete the old partial output '", temp,
           "': ", std::strerror(errno));
  check_space(s, ctx);
  return Plan::create;
}

// 64-bit hash of a write's bytes (words multiplied and rotated in): the
// read-back check compares these, so a write needs no second copy in memory.
std::uint64_t hash_bytes(const void* data, std::size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h = (h << 29) | (h >> 35);
  }
  for (; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

// The first setting whose value differs between the partial file's resume
// key and this run's, as "name: was A, now B" ("" when they agree).
std::string resume_key_difference(const std::string& was, const std::string& now) {
  nlohmann::json a, b;
  try {
    a = nlohmann::json::parse(was);
    b = nlohmann::json::parse(now);
  } catch (const nlohmann::json::exception&) {
    return was == now ? "" : "the recorded settings: unreadable";
  }
  for (const auto& [key, value] : b.items())
    if (!a.contains(key) || a[key] != value)
      return key + ": the partial output has " + (a.contains(key) ? a[key].dump() : "none") +
             ", this run " + value.dump();
  for (const auto& [key, value] : a.items())
    if (!b.contains(key))
      return key + ": the partial output has " + value.dump() + ", this run none";
  return "";
}

}  // namespace

std::string partial_output_path(const std::string& target) {
  return hidden_sibling(target, ".partial");
}

std::vector<std::pair<std::string, AttrValue>> identity_attributes(const FileIdentity& f,
                                                                   const std::string& prefix) {
  return {{prefix + "path", f.path},
          {prefix + "size", f.size},
          {prefix + "mtime_ns", f.mtime_ns},
          {prefix + "device", static_cast<std::int64_t>(f.device)},
          {prefix + "inode", static_cast<std::int64_t>(f.inode)}};
}

OutputFile OutputFile::create(MPI_Comm comm, const OutputSpec& spec) {
  H5Quiet quiet;
  OutputFile f;
  f.comm_ = comm;
  f.spec_ = spec;
  RA_MPI_CHECK(MPI_Comm_rank(comm, &f.rank_));
  RA_MPI_CHECK(MPI_Comm_size(comm, &f.size_));

  int plan = 0;
  agree(comm, [&] {
    if (f.rank_ == kRoot) plan = static_cast<int>(check_target(spec, f.temp_path_, f.lock_));
  });
  broadcast_string(comm, f.temp_path_);
  RA_MPI_CHECK(MPI_Bcast(&plan, 1, MPI_INT, kRoot, comm));
  if (static_cast<Plan>(plan) == Plan::resume) {
    f.reopen_partial();
    return f;
  }

  agree(
      comm,
      [&] {
        with_h5_context(f.context(), [&] {
          f.file_ = h5_open_parallel(comm, f.temp_path_, H5Open::create, f.context());
          RA_CHECK(static_cast<bool>(f.file_), io, "HDF5 cannot create it with MPI-IO");
        });
      },
      StepKind::collective);
  f.state_ = State::open;  // from here on the destructor removes the temporary file

  agree(
      comm,
      [&] {
        with_h5_context(f.context(), [&] {
          // Chunks are one (batch, head) plane by a run of tokens by the whole
          // head dim: readers take one head, or one token range of a head, at a
          // time, and such a read touches only its own chunks. A run is as many
          // tokens as fit in about 1 MiB (HDF5's default chunk-cache size; 4096
          // tokens at D = 64 in f32): big enough that chunk-index and per-chunk
          // I/O overheads vanish, small enough that reading a short token range
          // drags in little beyond it. No filters: parallel compressed writes
          // are slow and would force every write to be collective per chunk.
          const auto chunked = [&](const std::vector<hsize_t>& dims, std::int64_t row_bytes) {
            H5Handle dcpl(RA_H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)), H5Kind::plist);
            const std::int64_t tokens = static_cast<std::int64_t>(dims[2]);
            const std::int64_t run = std::clamp<std::int64_t>(kChunkBytes / row_bytes, 1, tokens);
            const hsize_t chunk[4] = {1, 1, hsize_t(run), dims.size() == 4 ? dims[3] : 1};
            RA_H5_CHECK(H5Pset_chunk(dcpl.get(), static_cast<int>(dims.size()), chunk));
            // Space at creation and no fill pass: every element gets written once.
            RA_H5_CHECK(H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY));
            RA_H5_CHECK(H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER));
            return dcpl;
          };
          f.o_type_ = h5_float_type(spec.o_dtype);
          // o, lse, then the gradients: all of the run's datasets exist from
          // the start, so a partial file has them whenever it is resumed.
          for (std::size_t i = 0; i < kDatasets; ++i) {
            const DatasetShape d = dataset_shape(spec, i);
            if (!d.present) continue;
            std::vector<hsize_t> dims;
            for (const std::int64_t x : d.dims(spec)) dims.push_back(hsize_t(x));
            H5Handle space(
                RA_H5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)),
                H5Kind::dataspace);
            H5Handle dcpl = chunked(dims, d.row * static_cast<std::int64_t>(dtype_size(d.stored)));
            const hid_t type = i == 0 ? f.o_type_.get() : H5T_IEEE_F32LE;
            f.dsets_[i] = H5Handle(RA_H5_CHECK(H5Dcreate2(f.file_.get(), d.name, type, space.get(),
                                                          H5P_DEFAULT, dcpl.get(), H5P_DEFAULT)),
                                   H5Kind::dataset);
          }
        });
      },
      StepKind::collective);
  f.reserve_space();
  f.set_attribute(kResumeKeyAttribute, spec.resume_key);
  f.mark_chunks_done(0);
  return f;
}

// Rank 0, read-only (a refused resume changes nothing, not even the
// partial's mtime): the partial's records, from its description (made in a
// child process, like every file a run opens), against this run's; returns
// the chunks it holds.
std::int64_t check_partial_records(const OutputSpec& spec, const std::string& temp,
                                   const std::string& ctx, const std::string& again) {
  const H5FileDesc d = describe_h5_file(temp, H5DescribeWhat{}, ctx);
  const H5AttributeDesc* key = d.attribute(kResumeKeyAttribute);
  const H5AttributeDesc* done_attr = d.attribute(kChunksDoneAttribute);
  const auto* key_text = key && !key->summary ? std::get_if<std::string>(&key->value) : nullptr;
  const auto* done =
      done_attr && !done_attr->summary ? std::get_if<std::int64_t>(&done_attr->value) : nullptr;
  RA_CHECK(key_text != nullptr && done != nullptr, usage, ctx,
           ": not a ringattn partial output (no progress record)", again);
  const std::string diff = resume_key_difference(*key_text, spec.resume_key);
  RA_CHECK(diff.empty(), usage, ctx, ": cannot resume, the run differs in ", diff, again);
  RA_CHECK(*done >= 0 && (spec.chunks <= 0 || *done <= spec.chunks), input, ctx,
           ": its record says ", counted(*done, "chunk"), " ", *done == 1 ? "is" : "are",
           " done, but the run has ", spec.chunks, "; the record is damaged", again);
  // The key covers shapes and types through the input and settings; check
  // anyway. The gradients are there exactly when this run writes them: a
  // forward run's partial file has no room for them, and a backward run's
  // would commit them unwritten.
  for (std::size_t i = 0; i < kDatasets; ++i) {
    const DatasetShape want = dataset_shape(spec, i);
    const H5DatasetDesc* ds = d.dataset(want.name);
    if (!want.present) {
      RA_CHECK(!want.gradient || ds == nullptr, input, ctx, ": has the gradient dataset '",
               want.name, "' of a backward run, but this run computes no gradients", again);
      continue;
    }
    RA_CHECK(ds != nullptr, input, ctx, ": has no dataset '", want.name, "'",
             want.gradient ? " (its run computed no gradients)" : "", again);
    RA_CHECK(ds->dims == want.dims(spec), input, ctx, ": '", want.name,
             "' has another shape than this run's output", again);
  }
  return *done;
}

void OutputFile::reopen_partial() {
  // Not yet State::open: if anything below fails, the partial file stays.
  const std::string ctx = "output file '" + spec_.path + "': partial output '" + temp_path_ + "'";
  const std::string again = "; start again with --overwrite (which deletes it)";
  std::int64_t done = 0;
  agree(comm_, [&] {
    if (rank_ == kRoot) done = check_partial_records(spec_, temp_path_, ctx, again);
  });
  RA_MPI_CHECK(MPI_Bcast(&done, 1, MPI_INT64_T, kRoot, comm_));
  agree(
      comm_,
      [&] {
        file_ = h5_open_parallel(comm_, temp_path_, H5Open::write, ctx);
        RA_CHECK(static_cast<bool>(file_), io, ctx,
                 ": HDF5 cannot reopen it (damaged when its run died?)", again);
        with_h5_context(ctx, [&] { open_datasets(); });
      },
      StepKind::collective);
  chunks_done_ = done;
  resumed_ = true;
  state_ = State::open;
  reserve_space();
}

void OutputFile::open_datasets() {
  static_assert(kSlots == kDatasets, "one DatasetShape per Slot");
  o_type_ = h5_float_type(spec_.o_dtype);
  for (std::size_t i = 0; i < kSlots; ++i) {
    const DatasetShape d = dataset_shape(spec_, i);
    if (d.present)
      dsets_[i] =
          H5Handle(RA_H5_CHECK(H5Dopen2(file_.get(), d.name, H5P_DEFAULT)), H5Kind::dataset);
  }
}

// Datasets before the file (close order; see the header's members).
void OutputFile::close_datasets() {
  for (std::size_t i = kSlots; i-- > 0;) dsets_[i].close();
  o_type_.close();
  file_.close();
}

void OutputFile::reset_datasets() noexcept {
  for (std::size_t i = kSlots; i-- > 0;) dsets_[i].reset();
  o_type_.reset();
  file_.reset();
}

// Collective: HDF5's buffers to the file, one verdict on every rank (a full
// disk named as such).
void OutputFile::flush() {
  agree(
      comm_,
      [&] {
        with_disk_hint(spec_.path, [&] {
          with_h5_context(context(), [&] { RA_H5_CHECK(H5Fflush(file_.get(), H5F_SCOPE_GLOBAL)); });
        });
      },
      StepKind::collective);
}

void OutputFile::reserve_space() {
  H5Quiet quiet;
  // After a flush the file is as long as HDF5's allocation (the datasets
  // are allocated at creation); its holes and the attributes' headroom get
  // real blocks now, so no later write can meet a full disk.
  flush();
  agree(comm_, [&] {
    if (rank_ != kRoot || space_checks_skipped()) return;
    const int fd = ::open(temp_path_.c_str(), O_WRONLY | O_CLOEXEC);
    RA_CHECK(fd >= 0, io, context(), ": cannot open it to reserve space: ", std::strerror(errno));
    struct stat st {};
    const off_t size = ::fstat(fd, &st) == 0 ? st.st_size : 0;
    const off_t want = std::max<off_t>(size, static_cast<off_t>(result_bytes(spec_)));
    const int rc = ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, want);
    const int err = errno;
    ::close(fd);
    // Filesystems without fallocate: the read-back checks still catch a loss.
    if (rc == 0 || err == EOPNOTSUPP || err == ENOSYS) return;
    RA_CHECK(false, io, context(), ": cannot reserve ", binary_bytes(static_cast<double>(want)),
             " for the result in '", directory_of(spec_.path), "': ", std::strerror(err));
  });
}

void OutputFile::verify_pending_writes() {
  H5Quiet quiet;
  // MPI-IO's rule for reading what other ranks (the aggregators) wrote:
  // sync, then read. The flush is that sync.
  flush();
  // Every write is collective, so every rank has the same list.
  for (const PendingWrite& w : pending_) {
    const auto i = static_cast<std::size_t>(w.slot);
    const std::string ctx = context() + ", dataset '" + dataset_shape(spec_, i).name + "'";
    agree(
        comm_,
        [&] {
          readback_.resize(w.bytes);
          with_h5_context(ctx, [&] {
            transfer_shard(comm_, Transfer::read, dsets_[i].get(),
                           w.slot == Slot::o ? o_type_.get() : H5T_NATIVE_FLOAT, w.rows, w.range,
                           readback_.data());
          });
          RA_CHECK(hash_bytes(readback_.data(), w.bytes) == w.hash, io, ctx,
                   ": rows written for batch ", w.range.b0, ", heads ", w.range.h0, "..",
                   w.range.h0 + w.range.h_count - 1,
                   " did not reach the file (read back after a flush, they differ): the filesystem "
                   "or the MPI-IO layer lost a write",
                   full_disk_hint(spec_.path));
        },
        StepKind::collective);
  }
  pending_.clear();
}

void OutputFile::mark_chunks_done(std::int64_t n) {
  verify_pending_writes();  // only chunks that are on disk are recorded
  set_attribute(kChunksDoneAttribute, n);
  flush();
  chunks_done_ = n;
}

void OutputFile::suspend() {
  H5Quiet quiet;
  agree(
      comm_,
      [&] {
        RA_CHECK(state_ == State::open, usage, context(), ": suspend after commit or abort");
        with_h5_context(context(), [&] { close_datasets(); });
      },
      StepKind::collective);
  state_ = State::suspended;
  lock_.release();
}

OutputFile::OutputFile(OutputFile&& o) noexcept
    : comm_(o.comm_),
      rank_(o.rank_),
      size_(o.size_),
      spec_(std::move(o.spec_)),
      temp_path_(std::move(o.temp_path_)),
      state_(std::exchange(o.state_, State::none)),
      last_io_(o.last_io_),
      chunks_done_(o.chunks_done_),
      resumed_(o.resumed_),
      scratch_(std::move(o.scratch_)),
      pending_(std::move(o.pending_)),
      readback_(std::move(o.readback_)),
      lock_(std::move(o.lock_)),
      file_(std::move(o.file_)),
      o_type_(std::move(o.o_type_)),
      dsets_(std::move(o.dsets_)) {}

OutputFile::~OutputFile() {
  if (state_ == State::open) abort();
}

std::string OutputFile::context() const {
  return "output file '" + spec_.path + "' (temporary '" + temp_path_ + "')";
}

void OutputFile::write(Slot slot, const Partition& part, const BatchHeadRange& range,
                       DType mem_type, const void* data) {
  H5Quiet quiet;
  const auto si = static_cast<std::size_t>(slot);
  const DatasetShape shape = dataset_shape(spec_, si);
  const std::string ctx = context() + ", dataset '" + shape.name + "'";
  const DType stored = shape.stored;
  const hid_t dset = dsets_[si].get();
  Positions rows;
  std::size_t n = 0;
  agree(comm_, [&] {
    RA_CHECK(state_ == State::open, usage, ctx, ": write after commit or abort");
    RA_CHECK(dset >= 0, usage, ctx, ": not in this file (",
             slot == Slot::lse ? "lse is written only when asked for"
                               : "dq, dk and dv are written only with gradients",
             ")");
    RA_CHECK(part.ranks() == size_, usage, ctx, ": partition over ", part.ranks(),
             " ranks, but the communicator has ", size_);
    RA_CHECK(part.tokens() == shape.tokens, usage, ctx, ": partition of ", part.tokens(),
             " tokens, but the dataset has N = ", shape.tokens);
    RA_CHECK(mem_type == DType::f32 || mem_type == stored, usage, ctx, ": cannot write ",
             dtype_name(mem_type), " data to ", dtype_name(stored), " storage");
    rows = part.positions(rank_);
    check_shard(ctx, spec_.B, shape.heads, shape.tokens, rows, range);
    n = static_cast<std::size_t>(range.b_count * range.h_count * rows.size() * shape.row);
    RA_CHECK(data != nullptr || n == 0, usage, ctx, ": no data for ", n, " elements");
    if (mem_type != stored) {  // f32 -> f16, rounded by us (see header)
      scratch_.resize(n);
      store_from_f32(static_cast<const float*>(data), stored, scratch_.data(), n);
    }
  });
  const void* buf = mem_type != stored ? scratch_.data() : data;
  const hid_t mem = slot == Slot::o ? o_type_.get() : H5T_NATIVE_FLOAT;
  agree(
      comm_,
      [&] {
        with_disk_hint(spec_.path, [&] {
          with_h5_context(ctx, [&] {
            // transfer_shard serves reads too, hence void*; H5Dwrite only reads buf.
            last_io_ = transfer_shard(comm_, Transfer::write, dset, mem, rows, range,
                                      const_cast<void*>(buf));
          });
        });
      },
      StepKind::collective);
  const std::size_t bytes = n * dtype_size(stored);
  pending_.push_back({slot, rows, range, bytes, hash_bytes(buf, bytes)});
}

void OutputFile::write_o(const Partition& part, const BatchHeadRange& range, DType mem_type,
                         const void* data) {
  write(Slot::o, part, range, mem_type, data);
}

void OutputFile::write_lse(const Partition& part, const BatchHeadRange& range, const float* lse) {
  // No lse dataset: the hid is invalid, and write() says so on every rank.
  write(Slot::lse, part, range, DType::f32, lse);
}

void OutputFile::write_dq(const Partition& qpart, const BatchHeadRange& q_range,
                          const float* data) {
  write(Slot::dq, qpart, q_range, DType::f32, data);
}

void OutputFile::write_dk(const Partition& kvpart, const BatchHeadRange& kv_range,
                          const float* data) {
  write(Slot::dk, kvpart, kv_range, DType::f32, data);
}

void OutputFile::write_dv(const Partition& kvpart, const BatchHeadRange& kv_range,
                          const float* data) {
  write(Slot::dv, kvpart, kv_range, DType::f32, data);
}

void OutputFile::set_attribute(const std::string& name, const AttrValue& value) {
  H5Quiet quiet;
  // Rank 0's name and value, on every rank: attributes are metadata, which
  // every rank writes collectively with identical arguments.
  H5AttributeDesc a{name, value, false};
  std::vector<std::uint8_t> bytes;
  if (rank_ == kRoot) bytes = nlohmann::json::to_cbor(nlohmann::json(a));
  long long n = static_cast<long long>(bytes.size());
  RA_MPI_CHECK(MPI_Bcast(&n, 1, MPI_LONG_LONG, kRoot, comm_));
  bytes.resize(static_cast<std::size_t>(n));
  RA_MPI_CHECK(MPI_Bcast(bytes.data(), static_cast<int>(n), MPI_BYTE, kRoot, comm_));
  if (rank_ != kRoot) a = nlohmann::json::from_cbor(bytes).get<H5AttributeDesc>();

  const std::string ctx = context() + ", attribute '" + a.name + "'";
  agree(
      comm_,
      [&] {
        RA_CHECK(state_ == State::open, usage, ctx, ": the file is committed or aborted");
        RA_CHECK(!a.name.empty(), usage, ctx, ": attribute name is empty");
        // Attributes of the file id live on the root group.
        with_h5_context(ctx, [&] { write_root_attribute(file_.get(), a.name, a.value); });
      },
      StepKind::collective);
}

void OutputFile::set_attributes(const std::vector<std::pair<std::string, AttrValue>>& attrs) {
  // Rank 0's count decides how many collective set_attribute calls follow.
  long long count = static_cast<long long>(attrs.size());
  RA_MPI_CHECK(MPI_Bcast(&count, 1, MPI_LONG_LONG, kRoot, comm_));
  for (long long a = 0; a < count; ++a) {
    const auto idx = static_cast<std::size_t>(a);
    if (idx < attrs.size())
      set_attribute(attrs[idx].first, attrs[idx].second);
    else
      set_attribute("", std::int64_t{0});  // only rank 0's arguments are used
  }
}

void OutputFile::commit() {
  H5Quiet quiet;
  verify_pending_writes();
  // The progress record belongs to the partial file, not to the result.
  agree(
      comm_,
      [&] {
        with_h5_context(context(), [&] {
          for (const char* a : {kResumeKeyAttribute, kChunksDoneAttribute})
            if (RA_H5_CHECK(H5Aexists(file_.get(), a)) > 0) RA_H5_CHECK(H5Adelete(file_.get(), a));
        });
      },
      StepKind::collective);
  set_attribute(kCompleteAttribute, std::int64_t{1});  // last thing written
  agree(
      comm_,
      [&] {
        // Collective: flushes metadata and closes the MPI file.
        with_h5_context(context(), [&] { close_datasets(); });
      },
      StepKind::collective);
  // Every rank has closed the file (agree is a barrier): rank 0 renames.
  agree(comm_, [&] {
    if (rank_ == kRoot) rename_into_place(temp_path_, spec_.path, spec_.overwrite, "output file");
  });
  state_ = State::committed;
  lock_.release();
}

void OutputFile::abort() noexcept {
  if (state_ != State::open) return;
  state_ = State::none;
  // A resumed file holds an earlier run's chunks, which the user asked to
  // keep: close it, but leave it for the next --resume.
  const bool keep = resumed_;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) {  // too late for collective closes: at least drop the name
    if (rank_ == kRoot && !keep) ::unlink(temp_path_.c_str());
    lock_.release();
    return;
  }
  H5Quiet quiet;
  reset_datasets();    // collective, like every close of a parallel file
  MPI_Barrier(comm_);  // no rank still has the file open when it goes
  if (rank_ == kRoot && !keep) ::unlink(temp_path_.c_str());
  lock_.release();
}

}  // namespace ringattn
