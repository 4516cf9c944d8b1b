// Target checks, the temporary file, collective shard writes, root
// attributes and the atomic commit of the output file (see output_file.hpp).
#include "io/output_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "comm/agree.hpp"
#include "core/error.hpp"
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

// The fixed name of the temporary (partial) file: hidden, beside the target.
std::string partial_path_of(const std::string& path) {
  return directory_of(path) + "/." + std::filesystem::path(path).filename().string() + ".partial";
}

enum class Plan : int { create = 0, resume = 1 };

// Rank 0: everything about the target that can be known before writing;
// returns whether to create the partial file or continue it.
Plan check_target(const OutputSpec& s, std::string& temp) {
  const std::string ctx = "output file '" + s.path + "'";
  RA_CHECK(!s.path.empty(), usage, "output file: no path given");
  RA_CHECK(s.B > 0 && s.H > 0 && s.N > 0 && s.D > 0, usage, ctx,
           ": dataset shape must be positive, got [", s.B, ", ", s.H, ", ", s.N, ", ", s.D, "]");
  RA_CHECK(s.o_dtype == DType::f32 || s.o_dtype == DType::f16, usage, ctx,
           ": o must be f32 or f16, not ", dtype_name(s.o_dtype));

  check_new_file_target(s.path, s.overwrite, s.input_path, ctx);
  temp = partial_path_of(s.path);
  struct stat st {};
  if (::lstat(temp.c_str(), &st) != 0) return Plan::create;
  if (s.resume) return Plan::resume;
  RA_CHECK(s.overwrite, usage, ctx, ": an interrupted run left its partial output '", temp,
           "'; continue it with --resume, or start again with --overwrite (which deletes it)");
  RA_CHECK(::unlink(temp.c_str()) == 0, io, ctx, ": cannot delete the old partial output '", temp,
           "': ", std::strerror(errno));
  return Plan::create;
}

// A root attribute as text (variable-length string) or int64; read on every
// rank (metadata reads are collective in our file access property list).
std::string read_text_attribute(hid_t file, const char* name) {
  H5Handle attr(RA_H5_CHECK(H5Aopen(file, name, H5P_DEFAULT)), H5Kind::attribute);
  H5Handle type(RA_H5_CHECK(H5Tcopy(H5T_C_S1)), H5Kind::datatype);
  RA_H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE));
  RA_H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8));
  char* text = nullptr;
  RA_H5_CHECK(H5Aread(attr.get(), type.get(), &text));
  std::string out = text ? text : "";
  H5free_memory(text);
  return out;
}

std::int64_t read_int_attribute(hid_t file, const char* name) {
  H5Handle attr(RA_H5_CHECK(H5Aopen(file, name, H5P_DEFAULT)), H5Kind::attribute);
  std::int64_t v = 0;
  RA_H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_INT64, &v));
  return v;
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

// Rank 0: temp -> target. Without overwrite, a target that appeared while we
// wrote is not replaced (RENAME_NOREPLACE; a check before rename where the
// filesystem lacks it).
void rename_into_place(const std::string& temp, const OutputSpec& s) {
  const std::string ctx = "output file '" + s.path + "'";
  int rc = 0;
  if (s.overwrite) {
    rc = std::rename(temp.c_str(), s.path.c_str());
  } else {
    rc = ::renameat2(AT_FDCWD, temp.c_str(), AT_FDCWD, s.path.c_str(), RENAME_NOREPLACE);
    if (rc != 0 && (errno == EINVAL || errno == ENOSYS)) {
      struct stat st {};
      errno = EEXIST;
      rc = ::stat(s.path.c_str(), &st) == 0 ? -1 : std::rename(temp.c_str(), s.path.c_str());
    }
  }
  RA_CHECK(rc == 0 || errno != EEXIST, usage, ctx,
           ": appeared while the result was written; not replaced (set overwrite to replace it)");
  RA_CHECK(rc == 0, io, ctx, ": cannot rename '", temp, "' to it: ", std::strerror(errno));
  // Make the rename itself durable (best effort: not every filesystem can).
  const int fd = ::open(directory_of(s.path).c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

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
    if (f.rank_ == kRoot) plan = static_cast<int>(check_target(spec, f.temp_path_));
  });
  broadcast_string(comm, f.temp_path_);
  RA_MPI_CHECK(MPI_Bcast(&plan, 1, MPI_INT, kRoot, comm));
  if (static_cast<Plan>(plan) == Plan::resume) {
    f.reopen_partial();
    return f;
  }

  agree(comm, [&] {
    with_h5_context(f.context(), [&] {
      H5Handle fapl(RA_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)), H5Kind::plist);
      RA_H5_CHECK(H5Pset_fapl_mpio(fapl.get(), comm, MPI_INFO_NULL));
      RA_H5_CHECK(H5Pset_all_coll_metadata_ops(fapl.get(), true));
      RA_H5_CHECK(H5Pset_coll_metadata_write(fapl.get(), true));
      f.file_ = H5Handle(
          RA_H5_CHECK(H5Fcreate(f.temp_path_.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, fapl.get())),
          H5Kind::file);
    });
  });
  f.state_ = State::open;  // from here on the destructor removes the temporary file

  agree(comm, [&] {
    with_h5_context(f.context(), [&] {
      // Chunks are one (batch, head) plane by a run of tokens by the whole
      // head dim: readers take one head, or one token range of a head, at a
      // time, and such a read touches only its own chunks. A run is as many
      // tokens as fit in about 1 MiB (HDF5's default chunk-cache size; 4096
      // tokens at D = 64 in f32): big enough that chunk-index and per-chunk
      // I/O overheads vanish, small enough that reading a short token range
      // drags in little beyond it. No filters: parallel compressed writes
      // are slow and would force every write to be collective per chunk.
      const auto chunked = [&](int ndims, const hsize_t* dims, std::int64_t row_bytes) {
        H5Handle dcpl(RA_H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)), H5Kind::plist);
        const std::int64_t run = std::clamp<std::int64_t>(kChunkBytes / row_bytes, 1, spec.N);
        const hsize_t chunk[4] = {1, 1, hsize_t(run), ndims == 4 ? dims[3] : 1};
        RA_H5_CHECK(H5Pset_chunk(dcpl.get(), ndims, chunk));
        // Space at creation and no fill pass: every element gets written once.
        RA_H5_CHECK(H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY));
        RA_H5_CHECK(H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER));
        return dcpl;
      };
      f.o_type_ = h5_float_type(spec.o_dtype);
      const hsize_t o_dims[4] = {hsize_t(spec.B), hsize_t(spec.H), hsize_t(spec.N),
                                 hsize_t(spec.D)};
      H5Handle o_space(RA_H5_CHECK(H5Screate_simple(4, o_dims, nullptr)), H5Kind::dataspace);
      H5Handle o_dcpl =
          chunked(4, o_dims, spec.D * static_cast<std::int64_t>(dtype_size(spec.o_dtype)));
      f.o_ = H5Handle(RA_H5_CHECK(H5Dcreate2(f.file_.get(), "o", f.o_type_.get(), o_space.get(),
                                             H5P_DEFAULT, o_dcpl.get(), H5P_DEFAULT)),
                      H5Kind::dataset);
      if (spec.with_lse) {
        H5Handle lse_space(RA_H5_CHECK(H5Screate_simple(3, o_dims, nullptr)), H5Kind::dataspace);
        H5Handle lse_dcpl = chunked(3, o_dims, 4);
        f.lse_ =
            H5Handle(RA_H5_CHECK(H5Dcreate2(f.file_.get(), "lse", H5T_IEEE_F32LE, lse_space.get(),
                                            H5P_DEFAULT, lse_dcpl.get(), H5P_DEFAULT)),
                     H5Kind::dataset);
      }
    });
  });
  f.set_attribute(kResumeKeyAttribute, spec.resume_key);
  f.mark_chunks_done(0);
  return f;
}

void OutputFile::reopen_partial() {
  // Not yet State::open: if anything below fails, the partial file stays.
  const std::string ctx = "output file '" + spec_.path + "': partial output '" + temp_path_ + "'";
  const std::string again = "; start again with --overwrite (which deletes it)";
  agree(comm_, [&] {
    H5Handle fapl(RA_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)), H5Kind::plist);
    RA_H5_CHECK(H5Pset_fapl_mpio(fapl.get(), comm_, MPI_INFO_NULL));
    RA_H5_CHECK(H5Pset_all_coll_metadata_ops(fapl.get(), true));
    RA_H5_CHECK(H5Pset_coll_metadata_write(fapl.get(), true));
    const hid_t fid = H5Fopen(temp_path_.c_str(), H5F_ACC_RDWR, fapl.get());
    RA_CHECK(fid >= 0, io, ctx, ": HDF5 cannot reopen it (damaged when its run died?)", again);
    file_ = H5Handle(fid, H5Kind::file);
    with_h5_context(ctx, [&] {
      const hid_t root = file_.get();
      RA_CHECK(
          H5Aexists(root, kResumeKeyAttribute) > 0 && H5Aexists(root, kChunksDoneAttribute) > 0,
          usage, ctx, ": not a ringattn partial output (no progress record)", again);
      const std::string diff =
          resume_key_difference(read_text_attribute(root, kResumeKeyAttribute), spec_.resume_key);
      RA_CHECK(diff.empty(), usage, ctx, ": cannot resume, the run differs in ", diff, again);
      chunks_done_ = read_int_attribute(root, kChunksDoneAttribute);
      o_type_ = h5_float_type(spec_.o_dtype);
      o_ = H5Handle(RA_H5_CHECK(H5Dopen2(root, "o", H5P_DEFAULT)), H5Kind::dataset);
      if (spec_.with_lse)
        lse_ = H5Handle(RA_H5_CHECK(H5Dopen2(root, "lse", H5P_DEFAULT)), H5Kind::dataset);
      // The key covers shapes and types through the input and settings; check anyway.
      H5Handle space(RA_H5_CHECK(H5Dget_space(o_.get())), H5Kind::dataspace);
      hsize_t dims[4] = {};
      RA_CHECK(H5Sget_simple_extent_ndims(space.get()) == 4, usage, ctx, ": 'o' is not 4-d", again);
      RA_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims, nullptr));
      RA_CHECK(dims[0] == hsize_t(spec_.B) && dims[1] == hsize_t(spec_.H) &&
                   dims[2] == hsize_t(spec_.N) && dims[3] == hsize_t(spec_.D),
               usage, ctx, ": 'o' has another shape than this run's output", again);
    });
  });
  resumed_ = true;
  state_ = State::open;
}

void OutputFile::mark_chunks_done(std::int64_t n) {
  set_attribute(kChunksDoneAttribute, n);
  agree(comm_, [&] {
    with_h5_context(context(), [&] { RA_H5_CHECK(H5Fflush(file_.get(), H5F_SCOPE_GLOBAL)); });
  });
  chunks_done_ = n;
}

void OutputFile::suspend() {
  H5Quiet quiet;
  agree(comm_, [&] {
    RA_CHECK(state_ == State::open, usage, context(), ": suspend after commit or abort");
    with_h5_context(context(), [&] {
      lse_.close();
      o_.close();
      o_type_.close();
      file_.close();
    });
  });
  state_ = State::suspended;
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
      file_(std::move(o.file_)),
      o_type_(std::move(o.o_type_)),
      o_(std::move(o.o_)),
      lse_(std::move(o.lse_)) {}

OutputFile::~OutputFile() {
  if (state_ == State::open) abort();
}

std::string OutputFile::context() const {
  return "output file '" + spec_.path + "' (temporary '" + temp_path_ + "')";
}

void OutputFile::write(hid_t dset, const std::string& name, bool with_d, const Partition& part,
                       const BatchHeadRange& range, DType mem_type, const void* data) {
  H5Quiet quiet;
  const std::string ctx = context() + ", dataset '" + name + "'";
  const DType stored = with_d ? spec_.o_dtype : DType::f32;
  Positions rows;
  std::size_t n = 0;
  agree(comm_, [&] {
    RA_CHECK(state_ == State::open, usage, ctx, ": write after commit or abort");
    RA_CHECK(dset >= 0, usage, ctx, ": not in this file (lse is written only when asked for)");
    RA_CHECK(part.ranks() == size_, usage, ctx, ": partition over ", part.ranks(),
             " ranks, but the communicator has ", size_);
    RA_CHECK(part.tokens() == spec_.N, usage, ctx, ": partition of ", part.tokens(),
             " tokens, but the dataset has N = ", spec_.N);
    RA_CHECK(mem_type == DType::f32 || mem_type == stored, usage, ctx, ": cannot write ",
             dtype_name(mem_type), " data to ", dtype_name(stored), " storage");
    rows = part.positions(rank_);
    check_shard(ctx, spec_.B, spec_.H, spec_.N, rows, range);
    n = static_cast<std::size_t>(range.b_count * range.h_count * rows.size() *
                                 (with_d ? spec_.D : 1));
    RA_CHECK(data != nullptr || n == 0, usage, ctx, ": no data for ", n, " elements");
    if (mem_type != stored) {  // f32 -> f16, rounded by us (see header)
      scratch_.resize(n);
      store_from_f32(static_cast<const float*>(data), stored, scratch_.data(), n);
    }
  });
  const void* buf = mem_type != stored ? scratch_.data() : data;
  const hid_t mem = with_d ? o_type_.get() : H5T_NATIVE_FLOAT;
  agree(comm_, [&] {
    with_h5_context(ctx, [&] {
      // transfer_shard serves reads too, hence void*; H5Dwrite only reads buf.
      last_io_ = transfer_shard(Transfer::write, dset, mem, rows, range, const_cast<void*>(buf));
    });
  });
}

void OutputFile::write_o(const Partition& part, const BatchHeadRange& range, DType mem_type,
                         const void* data) {
  write(o_.get(), "o", true, part, range, mem_type, data);
}

void OutputFile::write_lse(const Partition& part, const BatchHeadRange& range, const float* lse) {
  // No lse dataset: the hid is invalid, and write() says so on every rank.
  write(lse_.get(), "lse", false, part, range, DType::f32, lse);
}

void OutputFile::set_attribute(const std::string& name, const AttrValue& value) {
  H5Quiet quiet;
  // Rank 0's name and value, on every rank: attributes are metadata, which
  // every rank writes collectively with identical arguments.
  std::string n = name;
  int kind = static_cast<int>(value.index());
  std::string text;
  std::int64_t i = 0;
  double d = 0.0;
  if (kind == 0) text = std::get<0>(value);
  if (kind == 1) i = std::get<1>(value);
  if (kind == 2) d = std::get<2>(value);
  broadcast_string(comm_, n);
  RA_MPI_CHECK(MPI_Bcast(&kind, 1, MPI_INT, kRoot, comm_));
  broadcast_string(comm_, text);
  RA_MPI_CHECK(MPI_Bcast(&i, 1, MPI_INT64_T, kRoot, comm_));
  RA_MPI_CHECK(MPI_Bcast(&d, 1, MPI_DOUBLE, kRoot, comm_));

  const std::string ctx = context() + ", attribute '" + n + "'";
  agree(comm_, [&] {
    RA_CHECK(state_ == State::open, usage, ctx, ": the file is committed or aborted");
    RA_CHECK(!n.empty(), usage, ctx, ": attribute name is empty");
    with_h5_context(ctx, [&] {
      const hid_t root = file_.get();  // attributes of the file id live on the root group
      if (RA_H5_CHECK(H5Aexists(root, n.c_str())) > 0) RA_H5_CHECK(H5Adelete(root, n.c_str()));
      H5Handle space(RA_H5_CHECK(H5Screate(H5S_SCALAR)), H5Kind::dataspace);
      H5Handle type;
      hid_t mem = H5I_INVALID_HID;
      const void* buf = nullptr;
      const char* cstr = text.c_str();
      switch (kind) {
        case 0:  // variable-length UTF-8: h5py reads it back as str
          type = H5Handle(RA_H5_CHECK(H5Tcopy(H5T_C_S1)), H5Kind::datatype);
          RA_H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE));
          RA_H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8));
          mem = type.get();
          buf = &cstr;
          break;
        case 1:
          type = H5Handle(RA_H5_CHECK(H5Tcopy(H5T_STD_I64LE)), H5Kind::datatype);
          mem = H5T_NATIVE_INT64;
          buf = &i;
          break;
        default:
          type = H5Handle(RA_H5_CHECK(H5Tcopy(H5T_IEEE_F64LE)), H5Kind::datatype);
          mem = H5T_NATIVE_DOUBLE;
          buf = &d;
          break;
      }
      H5Handle attr(RA_H5_CHECK(H5Acreate2(root, n.c_str(), type.get(), space.get(), H5P_DEFAULT,
                                           H5P_DEFAULT)),
                    H5Kind::attribute);
      RA_H5_CHECK(H5Awrite(attr.get(), mem, buf));
      attr.close();
    });
  });
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
  // The progress record belongs to the partial file, not to the result.
  agree(comm_, [&] {
    with_h5_context(context(), [&] {
      for (const char* a : {kResumeKeyAttribute, kChunksDoneAttribute})
        if (RA_H5_CHECK(H5Aexists(file_.get(), a)) > 0) RA_H5_CHECK(H5Adelete(file_.get(), a));
    });
  });
  set_attribute(kCompleteAttribute, std::int64_t{1});  // last thing written
  agree(comm_, [&] {
    with_h5_context(context(), [&] {
      lse_.close();
      o_.close();
      o_type_.close();
      file_.close();  // collective: flushes metadata and closes the MPI file
    });
  });
  // Every rank has closed the file (agree is a barrier): rank 0 renames.
  agree(comm_, [&] {
    if (rank_ == kRoot) rename_into_place(temp_path_, spec_);
  });
  state_ = State::committed;
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
    return;
  }
  H5Quiet quiet;
  lse_.reset();
  o_.reset();
  o_type_.reset();
  file_.reset();       // collective, like every close of a parallel file
  MPI_Barrier(comm_);  // no rank still has the file open when it goes
  if (rank_ == kRoot && !keep) ::unlink(temp_path_.c_str());
}

}  // namespace ringattn
