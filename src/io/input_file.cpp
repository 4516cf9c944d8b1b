// Validation on rank 0, the agreed verdict, the collective open and shard
// reads of the input file (see input_file.hpp).
#include "io/input_file.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>

#include <cerrno>
#include <climits>
#include <csignal>
#include <cstring>
#include <sstream>

#include "comm/agree.hpp"
#include "core/error.hpp"
#include "kernel/params.hpp"

namespace ringattn {

namespace {

constexpr int kRoot = 0;
constexpr std::array<const char*, 4> kAxisNames{"B (batch)", "H (heads)", "N (tokens)",
                                                "D (head dim)"};

// ---- the verdict's broadcast: InputInfo as bytes ---------------------------------

// One list of fields serves both directions: Packer appends, Unpacker reads back.
class Packer {
 public:
  void operator()(std::int64_t v) { raw(&v, sizeof v); }
  void operator()(std::uint64_t v) { raw(&v, sizeof v); }
  void operator()(bool v) { (*this)(std::int64_t{v}); }
  void operator()(DType v) { (*this)(static_cast<std::int64_t>(v)); }
  void operator()(const std::string& s) {
    (*this)(static_cast<std::int64_t>(s.size()));
    raw(s.data(), s.size());
  }
  template <class T>
  void operator()(const std::vector<T>& v) {
    (*this)(static_cast<std::int64_t>(v.size()));
    for (const auto& x : v) (*this)(x);
  }
  void operator()(const std::array<std::int64_t, 4>& a) {
    for (auto x : a) (*this)(x);
  }
  void operator()(const FileIdentity& f) {
    (*this)(f.path);
    for (auto x : {f.device, f.inode}) (*this)(x);
    for (auto x : {f.size, f.mtime_ns}) (*this)(x);
  }
  std::vector<char> bytes;

 private:
  void raw(const void* p, std::size_t n) {
    const char* c = static_cast<const char*>(p);
    bytes.insert(bytes.end(), c, c + n);
  }
};

class Unpacker {
 public:
  explicit Unpacker(const std::vector<char>& b) : bytes_(b) {}
  void operator()(std::int64_t& v) { raw(&v, sizeof v); }
  void operator()(std::uint64_t& v) { raw(&v, sizeof v); }
  void operator()(bool& v) {
    std::int64_t x = 0;
    (*this)(x);
    v = x != 0;
  }
  void operator()(DType& v) {
    std::int64_t x = 0;
    (*this)(x);
    v = static_cast<DType>(x);
  }
  void operator()(std::string& s) {
    s.resize(static_cast<std::size_t>(size()));
    raw(s.data(), s.size());
  }
  template <class T>
  void operator()(std::vector<T>& v) {
    v.resize(static_cast<std::size_t>(size()));
    for (auto& x : v) (*this)(x);
  }
  void operator()(std::array<std::int64_t, 4>& a) {
    for (auto& x : a) (*this)(x);
  }
  void operator()(FileIdentity& f) {
    (*this)(f.path);
    for (auto* x : {&f.device, &f.inode}) (*this)(*x);
    for (auto* x : {&f.size, &f.mtime_ns}) (*this)(*x);
  }

 private:
  std::int64_t size() {
    std::int64_t n = 0;
    (*this)(n);
    RA_CHECK(n >= 0 && static_cast<std::size_t>(n) <= bytes_.size() - pos_, internal,
             "input description broadcast is corrupt");
    return n;
  }
  void raw(void* p, std::size_t n) {
    RA_CHECK(n <= bytes_.size() - pos_, internal, "input description broadcast is short");
    std::memcpy(p, bytes_.data() + pos_, n);
    pos_ += n;
  }
  const std::vector<char>& bytes_;
  std::size_t pos_ = 0;
};

template <class Ar, class D>
void dataset_fields(Ar& ar, D& d) {
  ar(d.name);
  ar(d.dims);
  ar(d.dtype);
  ar(d.big_endian);
  ar(d.layout);
  ar(d.chunk);
  ar(d.filters);
  ar(d.file);
}

template <class Ar, class I>
void info_fields(Ar& ar, I& i) {
  ar(i.file);
  ar(i.linked);
  for (auto* x : {&i.B, &i.Hq, &i.Hkv, &i.Nq, &i.Nkv, &i.D}) ar(*x);
  ar(i.dtype);
  dataset_fields(ar, i.q);
  dataset_fields(ar, i.k);
  dataset_fields(ar, i.v);
}

// Rank 0's info to every rank (two broadcasts).
void broadcast_info(MPI_Comm comm, int rank, InputInfo& info) {
  Packer p;
  if (rank == kRoot) info_fields(p, info);
  long long n = static_cast<long long>(p.bytes.size());
  RA_MPI_CHECK(MPI_Bcast(&n, 1, MPI_LONG_LONG, kRoot, comm));
  p.bytes.resize(static_cast<std::size_t>(n));
  RA_MPI_CHECK(MPI_Bcast(p.bytes.data(), static_cast<int>(n), MPI_CHAR, kRoot, comm));
  if (rank != kRoot) {
    Unpacker u(p.bytes);
    info_fields(u, info);
  }
}

// ---- validation (rank 0, serial driver) -------------------------------------------

std::string shape_text(const std::vector<hsize_t>& dims) {
  std::ostringstream os;
  os << '[';
  for (std::size_t i = 0; i < dims.size(); ++i) os << (i ? ", " : "") << dims[i];
  os << ']';
  return os.str();
}

// " (the file's root holds: a, b, c)" to help with a misspelt dataset name.
std::string root_listing(hid_t file) {
  H5G_info_t g{};
  if (H5Gget_info(file, &g) < 0) return "";
  std::string out;
  const hsize_t shown = std::min<hsize_t>(g.nlinks, 8);
  for (hsize_t i = 0; i < shown; ++i) {
    char name[256] = "";
    if (H5Lget_name_by_idx(file, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name,
                           H5P_DEFAULT) < 0)
      break;
    out += (i ? ", " : "") + std::string(name);
  }
  if (g.nlinks > shown) out += ", ...";
  return g.nlinks == 0 ? " (the file's root is empty)" : " (the file's root holds: " + out + ")";
}

// Which of our types a float datatype is; throws Error(input) for anything but
// IEEE binary32 and binary16 in either byte order.
DType float_dtype(hid_t type, bool& big_endian) {
  const H5T_class_t cls = H5Tget_class(type);
  const std::size_t size = H5Tget_size(type);
  RA_CHECK(cls == H5T_FLOAT, input, "has ", h5_type_class_name(cls), " elements of ", size,
           " bytes; expected IEEE float32 or float16");
  std::size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
  RA_H5_CHECK(H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize));
  const std::size_t ebias = H5Tget_ebias(type);
  const std::size_t precision = H5Tget_precision(type);
  const int offset = H5Tget_offset(type);
  const H5T_order_t order = H5Tget_order(type);
  RA_CHECK(order == H5T_ORDER_LE || order == H5T_ORDER_BE, input,
           "has floats in an unsupported byte order");
  big_endian = order == H5T_ORDER_BE;
  const bool dense = offset == 0 && precision == 8 * size && mpos == 0 && spos == 8 * size - 1;
  if (size == 4 && dense && epos == 23 && esize == 8 && msize == 23 && ebias == 127)
    return DType::f32;
  if (size == 2 && dense && epos == 10 && esize == 5 && msize == 10 && ebias == 15)
    return DType::f16;
  RA_CHECK(size != 8, input, "has float64 elements; expected float32 or float16 (convert with ",
           "numpy's astype)");
  RA_CHECK(false, input, "has a ", size, "-byte float with ", esize, " exponent and ", msize,
           " mantissa bits; expected IEEE float32 or float16",
           size == 2 && esize == 8 ? " (bfloat16 is not accepted in files)" : "");
}

// Opens, checks and describes one of q, k, v. Messages name no file or
// dataset: the caller's context adds them.
DatasetInfo describe_dataset(hid_t file, const std::string& name) {
  DatasetInfo d;
  d.name = name;
  const htri_t exists = H5Lexists(file, name.c_str(), H5P_DEFAULT);  // < 0: a parent is missing
  h5_clear_last_error();
  RA_CHECK(exists > 0, input, "no such dataset", root_listing(file));
  H5Handle obj(RA_H5_CHECK(H5Oopen(file, name.c_str(), H5P_DEFAULT)), H5Kind::object);
  const H5I_type_t kind = H5Iget_type(obj.get());
  RA_CHECK(kind == H5I_DATASET, input, "is a ",
           kind == H5I_GROUP      ? "group"
           : kind == H5I_DATATYPE ? "named datatype"
                                  : "object of unknown kind",
           ", not a dataset");
  const hid_t dset = obj.get();  // an object opened by H5Oopen is the dataset itself
  {
    // An external link (on the dataset or a group above it) puts the data in
    // another file, which the run reads too.
    H5Handle holder(RA_H5_CHECK(H5Iget_file_id(dset)), H5Kind::file);
    const ssize_t len = RA_H5_CHECK(H5Fget_name(holder.get(), nullptr, 0));
    d.file.assign(static_cast<std::size_t>(len) + 1, '\0');
    RA_H5_CHECK(H5Fget_name(holder.get(), d.file.data(), d.file.size()));
    d.file.resize(static_cast<std::size_t>(len));
  }

  H5Handle space(RA_H5_CHECK(H5Dget_space(dset)), H5Kind::dataspace);
  const H5S_class_t sclass = H5Sget_simple_extent_type(space.get());
  RA_CHECK(sclass == H5S_SIMPLE, input, "is ", sclass == H5S_SCALAR ? "a scalar" : "empty (null)",
           "; expected 4 dimensions [B, H, N, D]");
  const int ndims = RA_H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  std::vector<hsize_t> dims(static_cast<std::size_t>(ndims));
  RA_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
  RA_CHECK(ndims == 4, input, "has ", ndims, " dimensions ", shape_text(dims),
           "; expected 4 [B, H, N, D]");
  for (std::size_t a = 0; a < 4; ++a) {
    RA_CHECK(dims[a] > 0, input, "has length 0 along ", kAxisNames[a], " in shape ",
             shape_text(dims));
    RA_CHECK(dims[a] <= static_cast<hsize_t>(INT64_MAX), input, "has length ", dims[a], " along ",
             kAxisNames[a], " in shape ", shape_text(dims), ", beyond a 64-bit signed count");
    d.dims[a] = static_cast<std::int64_t>(dims[a]);
  }
  RA_CHECK(d.dims[3] <= kMaxHeadDim, input, "has head dim D = ", d.dims[3], " in shape ",
           shape_text(dims), "; at most ", kMaxHeadDim, " is supported");

  H5Handle type(RA_H5_CHECK(H5Dget_type(dset)), H5Kind::datatype);
  d.dtype = float_dtype(type.get(), d.big_endian);
  // Sizes are int64 from here on (shards, buffers, offsets): the whole
  // dataset's byte count must fit, or later arithmetic would wrap silently.
  // (A chunked dataset can declare such a shape in a file of a few KiB.)
  std::int64_t bytes = static_cast<std::int64_t>(dtype_size(d.dtype));
  bool overflow = false;
  for (const std::int64_t x : d.dims)
    overflow = overflow || __builtin_mul_overflow(bytes, x, &bytes);
  RA_CHECK(!overflow, input, "has shape ", shape_text(dims), " of ", dtype_name(d.dtype),
           ": its byte count overflows a 64-bit integer (over 8 EiB); not a runnable size");

  H5Handle dcpl(RA_H5_CHECK(H5Dget_create_plist(dset)), H5Kind::plist);
  RA_CHECK(RA_H5_CHECK(H5Pget_external_count(dcpl.get())) == 0, input,
           "keeps its elements in external raw files, which this tool does not read; copy them "
           "into the file (h5repack -l CONTI)");
  H5Storage storage = h5_storage(dcpl.get(), 4);
  RA_CHECK(storage.layout != "virtual" && storage.layout != "unknown", input,
           "has a storage layout this tool cannot read (", storage.layout, ")");
  d.layout = std::move(storage.layout);
  d.chunk = std::move(storage.chunk);
  const int nfilters = RA_H5_CHECK(H5Pget_nfilters(dcpl.get()));
  for (int i = 0; i < nfilters; ++i) {
    unsigned flags = 0, config = 0;
    std::size_t n_values = 0;  // we need no client data: ask for none
    char fname[128] = "";
    const H5Z_filter_t id =
        RA_H5_CHECK(H5Pget_filter2(dcpl.get(), static_cast<unsigned>(i), &flags, &n_values, nullptr,
                                   sizeof fname, fname, &config));
    const std::string label = fname[0] ? std::string(fname) : "filter " + std::to_string(id);
    const htri_t avail = H5Zfilter_avail(id);
    unsigned filter_config = 0;
    const bool decodes = avail > 0 && H5Zget_filter_info(id, &filter_config) >= 0 &&
                         (filter_config & H5Z_FILTER_CONFIG_DECODE_ENABLED);
    h5_clear_last_error();
    RA_CHECK(decodes, input, "is compressed with filter '", label, "' (id ", id,
             "), which this HDF5 library cannot decode; install its plugin (HDF5_PLUGIN_PATH) or "
             "rewrite the file without it");
    d.filters.push_back(label);
  }
  return d;
}

// Everything about the file that rank 0 checks before any rank opens it
// collectively.
InputInfo validate_input(const std::string& path, const InputNames& names) {
  const std::string file_ctx = "input file '" + path + "'";
  RA_CHECK(!names.q.empty() && !names.k.empty() && !names.v.empty(), usage, file_ctx,
           ": dataset names must not be empty");

  InputInfo info;
  H5Handle file = h5_open_read_serial(path, file_ctx);

  const auto describe = [&](const std::string& name) {
    return with_h5_context(file_ctx + ", dataset '" + name + "'",
                           [&] { return describe_dataset(file.get(), name); });
  };
  info.q = describe(names.q);
  info.k = describe(names.k);
  info.v = describe(names.v);
  with_h5_context(file_ctx, [&] { file.close(); });

  const DatasetInfo &q = info.q, &k = info.k, &v = info.v;
  const auto dims = [](const DatasetInfo& d) {
    return shape_text(
        {hsize_t(d.dims[0]), hsize_t(d.dims[1]), hsize_t(d.dims[2]), hsize_t(d.dims[3])});
  };
  const std::string shapes = "'" + q.name + "' " + dims(q) + ", '" + k.name + "' " + dims(k) +
                             ", '" + v.name + "' " + dims(v);
  RA_CHECK(q.dtype == k.dtype && k.dtype == v.dtype, input, file_ctx, ": datasets '", q.name, "' (",
           dtype_name(q.dtype), "), '", k.name, "' (", dtype_name(k.dtype), ") and '", v.name,
           "' (", dtype_name(v.dtype), ") must have one element type");
  RA_CHECK(q.dims[0] == k.dims[0] && k.dims[0] == v.dims[0], input, file_ctx,
           ": datasets disagree in batch size B: ", shapes);
  RA_CHECK(q.dims[3] == k.dims[3] && k.dims[3] == v.dims[3], input, file_ctx,
           ": datasets disagree in head dim D: ", shapes);
  RA_CHECK(k.dims[1] == v.dims[1] && k.dims[2] == v.dims[2], input, file_ctx, ": datasets '",
           k.name, "' and '", v.name, "' must agree in heads H and tokens N: ", shapes);
  RA_CHECK(q.dims[1] % k.dims[1] == 0, input, file_ctx, ": dataset '", q.name, "' has ", q.dims[1],
           " heads, not a multiple of the ", k.dims[1], " heads of '", k.name,
           "' (grouped-query attention needs H_q % H_kv == 0): ", shapes);

  info.file = file_identity(path);
  for (const DatasetInfo* d : {&q, &k, &v}) {
    if (d->file.empty()) continue;
    const FileIdentity other = with_h5_context(file_ctx + ", dataset '" + d->name + "'",
                                               [&] { return file_identity(d->file); });
    bool known = same_file(other, info.file);
    for (const auto& l : info.linked) known = known || same_file(other, l);
    if (!known) info.linked.push_back(other);
  }
  info.B = q.dims[0];
  info.Hq = q.dims[1];
  info.Hkv = k.dims[1];
  info.Nq = q.dims[2];
  info.Nkv = k.dims[2];
  info.D = q.dims[3];
  info.dtype = q.dtype;
  return info;
}

// ---- validation in a child process ------------------------------------------------

std::atomic<bool> g_isolated{true};
// Validation reads only metadata: milliseconds, seconds on a busy parallel filesystem.
constexpr std::chrono::seconds kValidationTimeout{300};

bool write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

// HDF5 1.10 crashes (rather than fails) on some damaged files: the fuzzer
// found several (tests/fuzz/KNOWN_HDF5_ISSUES.md). So rank 0 validates in a
// forked child that only runs HDF5's serial driver and writes its verdict
// (the description, or the Error) to a pipe: a crash there is an input
// error, not a dead rank with a stack trace. Where fork or pipe fail, it
// validates in-process.
InputInfo validate_input_isolated(const std::string& path, const InputNames& names) {
  int fds[2];
  if (!g_isolated.load() || ::pipe(fds) != 0) return validate_input(path, names);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return validate_input(path, names);
  }
  if (pid == 0) {  // the child: no MPI, no unwinding into the parent's frames
    ::close(fds[0]);
    // A crash here must end the child at once: Open MPI's handlers would
    // print a backtrace, and can deadlock on a heap HDF5 just corrupted.
    for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL}) std::signal(sig, SIG_DFL);
    const int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) ::dup2(devnull, 2);  // glibc's and HDF5's last words: the parent speaks
    Packer p;
    try {
      InputInfo info = validate_input(path, names);
      p(std::int64_t{-1});
      info_fields(p, info);
    } catch (const Error& e) {
      p(static_cast<std::int64_t>(e.error_class()));
      p(std::string(e.what()));
    } catch (const std::exception& e) {
      p(static_cast<std::int64_t>(ErrorClass::internal));
      p(std::string(e.what()));
    }
    const bool ok = write_all(fds[1], p.bytes.data(), p.bytes.size());
    ::_exit(ok ? 0 : 1);
  }
  ::close(fds[1]);
  std::vector<char> bytes;
  char buf[4096];
  // A damaged file can also send HDF5 into a loop: the child gets a deadline.
  const auto deadline = std::chrono::steady_clock::now() + kValidationTimeout;
  bool timed_out = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    pollfd pfd{fds[0], POLLIN, 0};
    const int n = ::poll(&pfd, 1, static_cast<int>(std::min<long long>(left.count(), 1000)));
    if (n == 0 || (n < 0 && errno == EINTR)) continue;
    const ssize_t r = ::read(fds[0], buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    bytes.insert(bytes.end(), buf, buf + r);
  }
  ::close(fds[0]);
  int ws = 0;
  while (::waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
  }
  const std::string file_ctx = "input file '" + path + "'";
  RA_CHECK(!timed_out, input, file_ctx,
           ": the HDF5 library did not finish reading its metadata in ", kValidationTimeout.count(),
           " s: the file is damaged, or its filesystem is stuck");
  RA_CHECK(!WIFSIGNALED(ws), input, file_ctx, ": the HDF5 library crashed reading it (",
           ::strsignal(WTERMSIG(ws)),
           "): the file is damaged; check it with h5dump, or write it again");
  RA_CHECK(WIFEXITED(ws) && WEXITSTATUS(ws) == 0 && !bytes.empty(), internal, file_ctx,
           ": the validating process failed (status ", ws, ")");
  Unpacker u(bytes);
  std::int64_t verdict = 0;
  u(verdict);
  if (verdict >= 0) {
    std::string message;
    u(message);
    throw Error(static_cast<ErrorClass>(verdict), message);  // the child's text, as is
  }
  InputInfo info;
  info_fields(u, info);
  return info;
}

// f16 values at the front of buf become f32 values filling it: walking from
// the end, element i's 4 bytes overwrite only halves already converted.
void widen_f16_in_place(void* buf, std::size_t n) {
  auto* bytes = static_cast<unsigned char*>(buf);
  for (std::size_t i = n; i-- > 0;) {
    std::uint16_t h = 0;
    std::memcpy(&h, bytes + 2 * i, sizeof h);
    const float f = f16_to_float(h);
    std::memcpy(bytes + 4 * i, &f, sizeof f);
  }
}

}  // namespace

void set_input_validation_isolated(bool isolated) {
  g_isolated.store(isolated);
}

const char* input_tensor_name(InputTensor t) {
  switch (t) {
    case InputTensor::q:
      return "q";
    case InputTensor::k:
      return "k";
    case InputTensor::v:
      return "v";
  }
  return "?";
}

std::vector<FileIdentity> input_files(const InputInfo& info) {
  std::vector<FileIdentity> all{info.file};
  all.insert(all.end(), info.linked.begin(), info.linked.end());
  return all;
}

void check_input_unchanged(MPI_Comm comm, const InputInfo& info) {
  int rank = 0;
  RA_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  agree(comm, [&] {
    if (rank != kRoot) return;
    for (const FileIdentity& was : input_files(info)) {
      const std::string ctx = "input file '" + was.path + "'";
      struct stat st {};
      RA_CHECK(::stat(was.path.c_str(), &st) == 0, input, ctx, " vanished during the run (",
               std::strerror(errno), "); nothing is committed");
      const FileIdentity now = file_identity(was.path);
      const char* what = !same_file(now, was)           ? "was replaced by another file"
                         : now.size != was.size         ? "changed size"
                         : now.mtime_ns != was.mtime_ns ? "was modified"
                                                        : nullptr;
      RA_CHECK(what == nullptr, input, ctx, " ", what, " during the run (", was.size, " -> ",
               now.size,
               " bytes): the result would mix two inputs, so nothing is committed; "
               "run again on an input that stays put");
    }
  });
}

InputInfo inspect_input(MPI_Comm comm, const std::string& path, const InputNames& names) {
  H5Quiet quiet;
  int rank = 0;
  RA_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  InputInfo info;
  agree(comm, [&] {
    if (rank == kRoot) info = validate_input_isolated(path, names);
  });
  broadcast_info(comm, rank, info);
  return info;
}

InputFile InputFile::open(MPI_Comm comm, const std::string& path, const InputNames& names) {
  H5Quiet quiet;
  InputFile f;
  f.comm_ = comm;
  RA_MPI_CHECK(MPI_Comm_rank(comm, &f.rank_));
  RA_MPI_CHECK(MPI_Comm_size(comm, &f.size_));
  f.info_ = inspect_input(comm, path, names);

  // The file is valid: now every rank opens it. Metadata is read by one
  // rank and broadcast (collective metadata reads), not by all at once.
  agree(
      comm,
      [&] {
        with_h5_context("input file '" + path + "'", [&] {
          H5Handle fapl(RA_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)), H5Kind::plist);
          RA_H5_CHECK(H5Pset_fapl_mpio(fapl.get(), comm, MPI_INFO_NULL));
          RA_H5_CHECK(H5Pset_all_coll_metadata_ops(fapl.get(), true));
          f.file_ = H5Handle(RA_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get())),
                             H5Kind::file);
          const std::array<const DatasetInfo*, 3> ds{&f.info_.q, &f.info_.k, &f.info_.v};
          for (std::size_t i = 0; i < ds.size(); ++i)
            f.dsets_[i] =
                H5Handle(RA_H5_CHECK(H5Dopen2(f.file_.get(), ds[i]->name.c_str(), H5P_DEFAULT)),
                         H5Kind::dataset);
          f.mem_type_ = h5_float_type(f.info_.dtype);
        });
      },
      StepKind::collective);
  return f;
}

std::size_t InputFile::shard_elements(const Partition& part, const BatchHeadRange& r) const {
  return static_cast<std::size_t>(r.b_count * r.h_count * part.local_size(rank_) * info_.D);
}

void InputFile::read_shard(InputTensor t, const Partition& part, const BatchHeadRange& range,
                           DType mem_type, void* out) {
  H5Quiet quiet;
  const std::size_t ti = static_cast<std::size_t>(t);
  const DatasetInfo& d = info_.dataset(t);
  const std::string ctx = "input file '" + info_.file.path + "', dataset '" + d.name + "'";

  // Arguments first, agreed, so that no rank enters the collective read alone.
  Positions rows;
  std::size_t n = 0;
  agree(comm_, [&] {
    RA_CHECK(static_cast<bool>(dsets_[ti]), usage, ctx, ": read from a closed input file");
    RA_CHECK(part.ranks() == size_, usage, ctx, ": partition over ", part.ranks(),
             " ranks, but the communicator has ", size_);
    RA_CHECK(part.tokens() == d.dims[2], usage, ctx, ": partition of ", part.tokens(),
             " tokens, but the dataset has N = ", d.dims[2]);
    RA_CHECK(mem_type == DType::f32 || mem_type == info_.dtype, usage, ctx, ": cannot read ",
             dtype_name(info_.dtype), " data as ", dtype_name(mem_type),
             " (f32 or the storage type)");
    rows = part.positions(rank_);
    check_shard(ctx, d.dims[0], d.dims[1], d.dims[2], rows, range);
    n = shard_elements(part, range);
    RA_CHECK(out != nullptr || n == 0, usage, ctx, ": no output buffer for ", n, " elements");
  });

  agree(
      comm_,
      [&] {
        with_h5_context(ctx, [&] {
          last_io_ =
              transfer_shard(Transfer::read, dsets_[ti].get(), mem_type_.get(), rows, range, out);
        });
      },
      StepKind::collective);
  if (mem_type == DType::f32 && info_.dtype == DType::f16) widen_f16_in_place(out, n);
}

void InputFile::close() {
  if (!file_) return;
  H5Quiet quiet;
  agree(
      comm_,
      [&] {
        with_h5_context("input file '" + info_.file.path + "'", [&] {
          for (auto& d : dsets_) d.close();
          mem_type_.close();
          file_.close();
        });
      },
      StepKind::collective);
}

}  // namespace ringattn
