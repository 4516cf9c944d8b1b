// HDF5 identifier ownership and the quiet, recording error handler (see
// h5_handle.hpp).
#include "io/h5_handle.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include "io/file_identity.hpp"

namespace ringattn {

namespace {

// One per thread, as HDF5's error stacks are.
thread_local std::string t_last_error;

// The innermost entry of the stack is where the failure started; HDF5 puts
// the most specific words there ("unable to open file: name = ..., errno = 2").
herr_t keep_innermost(unsigned n, const H5E_error2_t* err, void* client) {
  if (n == 0 && err != nullptr && err->desc != nullptr) {
    auto* out = static_cast<std::string*>(client);
    *out = err->desc;
    for (char& c : *out)
      if (c == '\n' || c == '\r') c = ' ';  // our messages are one line
  }
  return 0;
}

// Installed by H5Quiet in place of H5Eprint2: record, print nothing.
herr_t record_error(hid_t estack, void* /*client*/) {
  std::string desc;
  H5Ewalk2(estack, H5E_WALK_UPWARD, keep_innermost, &desc);
  if (!desc.empty()) t_last_error = std::move(desc);
  return 0;
}

}  // namespace

void H5Handle::close() {
  if (id_ < 0) return;
  const hid_t id = std::exchange(id_, H5I_INVALID_HID);
  switch (kind_) {
    case H5Kind::file:
      RA_H5_CHECK(H5Fclose(id));
      break;
    case H5Kind::group:
      RA_H5_CHECK(H5Gclose(id));
      break;
    case H5Kind::dataset:
      RA_H5_CHECK(H5Dclose(id));
      break;
    case H5Kind::dataspace:
      RA_H5_CHECK(H5Sclose(id));
      break;
    case H5Kind::datatype:
      RA_H5_CHECK(H5Tclose(id));
      break;
    case H5Kind::plist:
      RA_H5_CHECK(H5Pclose(id));
      break;
    case H5Kind::attribute:
      RA_H5_CHECK(H5Aclose(id));
      break;
    case H5Kind::object:
      RA_H5_CHECK(H5Oclose(id));
      break;
  }
}

void H5Handle::reset() noexcept {
  if (id_ < 0) return;
  const hid_t id = std::exchange(id_, H5I_INVALID_HID);
  H5Quiet quiet;  // a failing close on an abort path must not print a stack
  switch (kind_) {
    case H5Kind::file:
      H5Fclose(id);
      break;
    case H5Kind::group:
      H5Gclose(id);
      break;
    case H5Kind::dataset:
      H5Dclose(id);
      break;
    case H5Kind::dataspace:
      H5Sclose(id);
      break;
    case H5Kind::datatype:
      H5Tclose(id);
      break;
    case H5Kind::plist:
      H5Pclose(id);
      break;
    case H5Kind::attribute:
      H5Aclose(id);
      break;
    case H5Kind::object:
      H5Oclose(id);
      break;
  }
}

H5Handle h5_float_type(DType t) {
  RA_CHECK(t != DType::bf16, usage, "bf16 cannot be stored in HDF5 files (use f32 or f16)");
  H5Handle type(RA_H5_CHECK(H5Tcopy(H5T_IEEE_F32LE)), H5Kind::datatype);
  if (t == DType::f16) {
    // Fields first (they fit the 32-bit precision), then shrink to 2 bytes.
    RA_H5_CHECK(H5Tset_fields(type.get(), 15, 10, 5, 0, 10));
    RA_H5_CHECK(H5Tset_size(type.get(), 2));
    RA_H5_CHECK(H5Tset_ebias(type.get(), 15));
  }
  return type;
}

H5Quiet::H5Quiet() {
  // H5Eget_auto2 fails only when HDF5 itself cannot initialise; then there is
  // nothing to restore and HDF5 calls will report through their return codes.
  if (H5Eget_auto2(H5E_DEFAULT, &old_func_, &old_data_) >= 0) {
    restore_ = true;
    H5Eset_auto2(H5E_DEFAULT, record_error, nullptr);
  }
}

H5Quiet::~H5Quiet() {
  if (restore_) H5Eset_auto2(H5E_DEFAULT, old_func_, old_data_);
}

std::string h5_last_error() {
  return t_last_error;
}

void h5_clear_last_error() {
  t_last_error.clear();
}

namespace detail {

void rethrow_with_context(const Error& e, const std::string& context) {
  std::string msg = e.what();
  if (std::string_view(msg).substr(0, context.size()) != context) msg = context + ": " + msg;
  const std::string reason = h5_last_error();
  if (!reason.empty() && msg.find(reason) == std::string::npos)
    msg = insert_before_tail(msg, " (HDF5: " + reason + ")");
  h5_clear_last_error();
  throw Error(e.error_class(), msg);
}

std::string insert_before_tail(const std::string& what, const std::string& text) {
  std::string msg = what;
  const auto tail = msg.rfind(" [");
  msg.insert(tail == std::string::npos ? msg.size() : tail, text);
  return msg;
}

}  // namespace detail

const char* h5_type_class_name(H5T_class_t c) {
  switch (c) {
    case H5T_INTEGER:
      return "integer";
    case H5T_FLOAT:
      return "float";
    case H5T_TIME:
      return "time";
    case H5T_STRING:
      return "string";
    case H5T_BITFIELD:
      return "bitfield";
    case H5T_OPAQUE:
      return "opaque";
    case H5T_COMPOUND:
      return "compound";
    case H5T_REFERENCE:
      return "reference";
    case H5T_ENUM:
      return "enum";
    case H5T_VLEN:
      return "variable-length";
    case H5T_ARRAY:
      return "array";
    default:
      return "unknown";
  }
}

H5Storage h5_storage(hid_t dcpl, int rank) {
  H5Storage st;
  switch (H5Pget_layout(dcpl)) {
    case H5D_CONTIGUOUS:
      st.layout = "contiguous";
      break;
    case H5D_COMPACT:
      st.layout = "compact";
      break;
    case H5D_CHUNKED: {
      st.layout = "chunked";
      std::vector<hsize_t> chunk(static_cast<std::size_t>(std::max(rank, 1)));
      const int n = RA_H5_CHECK(H5Pget_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data()));
      chunk.resize(static_cast<std::size_t>(n));
      st.chunk.assign(chunk.begin(), chunk.end());
      break;
    }
    case H5D_VIRTUAL:
      st.layout = "virtual";
      break;
    default:
      st.layout = "unknown";
  }
  return st;
}

namespace {

// Whether another process holds HDF5's lock for writing on `path`: HDF5
// takes flock(LOCK_EX) for a write open, so a shared lock cannot be had.
bool locked_by_writer(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return false;
  const bool locked = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);  // drops the probe's lock, if it got one
  return locked;
}

}  // namespace

H5Handle h5_open_read_serial(const std::string& path, const std::string& ctx) {
  check_readable_file(path, ctx);
  return with_h5_context(ctx, [&] {
#if H5_VERSION_GE(1, 12, 0)
    const htri_t is_hdf5 = H5Fis_accessible(path.c_str(), H5P_DEFAULT);
#else
    const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
#endif
    RA_CHECK(is_hdf5 >= 0, io, "cannot be read");
    RA_CHECK(is_hdf5 > 0, input, "is not an HDF5 file (no HDF5 signature)");
    H5Handle fapl(RA_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)), H5Kind::plist);
    RA_H5_CHECK(H5Pset_fapl_sec2(fapl.get()));
#if H5_VERSION_GE(1, 10, 7)
    // Lock when the filesystem can, read anyway when it cannot (Lustre, NFS).
    RA_H5_CHECK(H5Pset_file_locking(fapl.get(), true, true));
#endif
    const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
    if (f < 0 && locked_by_writer(path)) {
      h5_clear_last_error();  // HDF5's "unable to lock file" says less than this
      RA_FAIL(io,
              "is locked by another process that has it open for writing (HDF5 file locking); "
              "wait until that writer closes it");
    }
    RA_CHECK(f >= 0, input, "has an HDF5 signature but cannot be opened (truncated or corrupt)");
    return H5Handle(f, H5Kind::file);
  });
}

namespace {

// The name MPI-IO is handed for `path`, and the descriptor behind it when
// that is /proc/self/fd/N (-1 otherwise; the caller closes it once open).
struct MpioName {
  std::string name;
  int fd = -1;
  bool created = false;  // this rank made the (empty) new file
};

// Collective: a long path becomes its descriptor's name on every rank, or
// every rank throws the same Error (see h5_open_parallel).
MpioName mpio_name(MPI_Comm comm, const std::string& path, H5Open mode, const std::string& ctx) {
  if (path.size() <= kMpioPathLimit) return {path, -1};
  // Each step is agreed: a rank that returned early would leave the others
  // in the next collective.
  int no_proc = ::access("/proc/self/fd", X_OK) == 0 ? 0 : 1, any_no_proc = 0;
  RA_MPI_CHECK(MPI_Allreduce(&no_proc, &any_no_proc, 1, MPI_INT, MPI_MAX, comm));
  RA_CHECK(any_no_proc == 0, io, ctx, ": its path is ", path.size(), " bytes, longer than the ",
           kMpioPathLimit,
           " the MPI-IO layer takes, and /proc/self/fd is not there to shorten it; use a "
           "shorter path");
  int rank = 0;
  RA_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  int err = 0;
  if (mode == H5Open::create && rank == 0) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    err = fd < 0 ? errno : 0;
    if (fd >= 0) ::close(fd);
  }
  const bool created = mode == H5Open::create && rank == 0 && err == 0;
  RA_MPI_CHECK(MPI_Bcast(&err, 1, MPI_INT, 0, comm));  // rank 0's file exists before the opens
  MpioName n;
  if (err == 0) {
    n.fd = ::open(path.c_str(), (mode == H5Open::read ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    err = n.fd < 0 ? errno : 0;
  }
  int worst = err;
  RA_MPI_CHECK(MPI_Allreduce(&err, &worst, 1, MPI_INT, MPI_MAX, comm));
  if (worst != 0) {
    if (n.fd >= 0) ::close(n.fd);
    if (created) ::unlink(path.c_str());
    RA_FAIL(io, ctx, ": cannot open it: ", std::strerror(worst));
  }
  n.name = "/proc/self/fd/" + std::to_string(n.fd);
  n.created = created;
  return n;
}

}  // namespace

H5Handle h5_open_parallel(MPI_Comm comm, const std::string& path, H5Open mode,
                          const std::string& ctx) {
  H5Handle fapl(RA_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)), H5Kind::plist);
  RA_H5_CHECK(H5Pset_fapl_mpio(fapl.get(), comm, MPI_INFO_NULL));
  // Metadata is read by one rank and broadcast, not by all at once.
  RA_H5_CHECK(H5Pset_all_coll_metadata_ops(fapl.get(), true));
  if (mode != H5Open::read) RA_H5_CHECK(H5Pset_coll_metadata_write(fapl.get(), true));
  const MpioName n = mpio_name(comm, path, mode, ctx);
  hid_t f = H5I_INVALID_HID;
  if (mode == H5Open::create)  // through a descriptor the file exists already (rank 0 made it)
    f = H5Fcreate(n.name.c_str(), n.fd >= 0 ? H5F_ACC_TRUNC : H5F_ACC_EXCL, H5P_DEFAULT,
                  fapl.get());
  else
    f = H5Fopen(n.name.c_str(), mode == H5Open::read ? H5F_ACC_RDONLY : H5F_ACC_RDWR, fapl.get());
  if (n.fd >= 0) ::close(n.fd);                    // MPI-IO opened its own descriptor of the file
  if (f < 0 && n.created) ::unlink(path.c_str());  // leave no empty file behind
  return f < 0 ? H5Handle() : H5Handle(f, H5Kind::file);
}

}  // namespace ringattn
