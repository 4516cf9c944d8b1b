// Ownership of HDF5 identifiers, and HDF5's error reporting turned into ours.
//
// Every hid_t the io layer opens lives in an H5Handle, which closes it with
// the matching H5*close exactly once, also when an exception unwinds. HDF5's
// habit of printing its error stack to stderr is replaced, while an H5Quiet
// is alive, by recording the innermost message of the failing call, so the
// ringattn::Error we throw can quote it next to the file and dataset names.
//
// Opening files goes through here too: the serial read-only open every
// description starts with, and the one MPI-IO open (h5_open_parallel) the
// input and the output share.
//
// Includes: hdf5.h (hid_t, H5E_auto2_t), mpi.h (MPI_Comm), core/error.hpp
// (Error, RA_H5_CHECK).
#pragma once

#include <hdf5.h>
#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/message_text.hpp"

namespace ringattn {

// Which H5*close an identifier needs.
enum class H5Kind { file, group, dataset, dataspace, datatype, plist, attribute, object };

class H5Handle {
 public:
  H5Handle() = default;
  // Takes ownership of id (callers pass RA_H5_CHECK(H5xopen(...)), so id >= 0).
  H5Handle(hid_t id, H5Kind kind) noexcept : id_(id), kind_(kind) {}
  H5Handle(H5Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), kind_(o.kind_) {}
  H5Handle& operator=(H5Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      kind_ = o.kind_;
    }
    return *this;
  }
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  ~H5Handle() { reset(); }

  hid_t get() const { return id_; }
  H5Kind kind() const { return kind_; }
  explicit operator bool() const { return id_ >= 0; }

  // Closes now and throws Error(io) when HDF5 reports a failure: closing a
  // file flushes it, and a failed flush must not pass unseen.
  void close();
  // Closes and ignores failure (destructors and abort paths).
  void reset() noexcept;

 private:
  hid_t id_ = H5I_INVALID_HID;
  H5Kind kind_ = H5Kind::object;
};

// While alive, HDF5 prints no error stack; the innermost description of the
// last failing HDF5 call is kept for h5_last_error(). Nests; restores the
// previous handler when destroyed. Every public io entry point holds one.
class H5Quiet {
 public:
  H5Quiet();
  ~H5Quiet();
  H5Quiet(const H5Quiet&) = delete;
  H5Quiet& operator=(const H5Quiet&) = delete;

 private:
  H5E_auto2_t old_func_ = nullptr;
  void* old_data_ = nullptr;
  bool restore_ = false;
};

// A new little-endian IEEE datatype for t: float32, or the half type h5py
// writes for numpy.float16 (1 sign, 5 exponent, 10 mantissa bits, bias 15).
// HDF5 1.10 predefines no half type. bf16 has no HDF5 convention: usage error.
H5Handle h5_float_type(DType t);

// HDF5's own description of the last failure seen under an H5Quiet ("" when
// none since the last h5_clear_last_error()).
std::string h5_last_error();

// Read-only open with the serial (sec2) driver, after checks that give one
// clear line each, prefixed by `ctx`: Error io for a path that is missing,
// not a regular file (check_readable_file) or unreadable, and for a file
// another process holds open for writing (HDF5's file lock); Error input for
// a file that is not HDF5 or is truncated. Call it in a child process
// (describe_h5_file) on a file nothing vetted yet: HDF5 may crash on it.
H5Handle h5_open_read_serial(const std::string& path, const std::string& ctx);

// How h5_open_parallel opens: read-only, read-write, or a new file (which
// must not exist yet).
enum class H5Open { read, write, create };

// Collective over comm: opens `path` with the MPI-IO driver on every rank,
// metadata read collectively (and written collectively unless read-only).
// Returns an empty handle on every rank where HDF5 cannot open or create
// the file (the caller says why, inside its agreed step).
//
// Paths longer than kMpioPathLimit are opened through /proc/self/fd: Open
// MPI 4.1's OMPIO builds "<path>.locktest.<rank>" in a 256-byte buffer, and
// a longer name ends every rank in glibc's "buffer overflow detected" abort.
// Each rank opens the file itself and hands MPI-IO the short name of its
// descriptor, which the kernel resolves to the same file; a new file is
// created by rank 0 first (O_EXCL). Where /proc is missing such a path is
// refused with Error io, before MPI-IO sees it.
H5Handle h5_open_parallel(MPI_Comm comm, const std::string& path, H5Open mode,
                          const std::string& ctx);

// The longest path MPI-IO is handed as is (see h5_open_parallel). Files an
// input links to are opened by HDF5 under their own name: the input checks
// refuse a linked file whose name is longer.
inline constexpr std::size_t kMpioPathLimit = 200;

// How a dataset is stored, from its creation property list: layout
// "contiguous", "chunked", "compact", "virtual" or "unknown", and the chunk
// dims when chunked (else empty).
struct H5Storage {
  std::string layout;
  std::vector<std::int64_t> chunk;
};
H5Storage h5_storage(hid_t dcpl, int rank);

// "integer", "float", "string", "compound", ... for messages and `info`.
const char* h5_type_class_name(H5T_class_t c);
void h5_clear_last_error();

// Runs fn; an Error escaping it is rethrown with the same class, `context`
// ("input file 'x.h5', dataset 'q'") in front and HDF5's reason, when HDF5
// gave one, at the end. Messages stay on one line.
template <class Fn>
decltype(auto) with_h5_context(const std::string& context, Fn&& fn);

namespace detail {
[[noreturn]] void rethrow_with_context(const Error& e, const std::string& context);
// `what` with `text` inserted before its " [file:line, host:rank]" tail, so
// the location stays last.
std::string insert_before_tail(const std::string& what, const std::string& text);
}  // namespace detail

template <class Fn>
decltype(auto) with_h5_context(const std::string& context, Fn&& fn) {
  h5_clear_last_error();
  try {
    return std::forward<Fn>(fn)();
  } catch (const Error& e) {
    detail::rethrow_with_context(e, context);
  }
}

}  // namespace ringattn
