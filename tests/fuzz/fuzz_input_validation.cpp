// libFuzzer target for every path that opens a file a user names: arbitrary
// bytes as a file, through
//   - ringattn::inspect_input, the checks `run` (and `verify --input`) make;
//   - ringattn::describe_h5_file of the whole root with its attributes, what
//     `info` prints and what `verify --output` and a resume read, then the
//     input checks over that description (info's verdict), then, when the
//     file has an `o` dataset, a row read of it (verify's reads).
// HDF5 parses the file's metadata there, and our code walks what HDF5 hands
// back, so a malformed file must end in a clean verdict, never in a crash.
//
// Verdicts:
//   - a ringattn::Error of class usage, input or io: expected, the file was
//     judged (a valid file passes, a broken one is refused with a message);
//   - an Error of class internal (a broken invariant, or another exception
//     that agree() wrapped), any other exception, a crash, a sanitizer report,
//     a hang (libFuzzer's -timeout): a finding, the process aborts;
//   - an HDF5 object still open after inspect_input returned: a leaked handle
//     on some error path, a finding too (the next open of the same path would
//     see the stale file).
//
// MPI: the library's entry points are collective, so MPI is initialised once
// as a singleton and each input is inspected over MPI_COMM_SELF.
//
// Includes: mpi.h (MPI_Init), hdf5.h (H5Fget_obj_count), unistd.h (getpid,
// unlink), core/error.hpp (Error), core/isolated.hpp (isolation off),
// io/h5_describe.hpp (describe_h5_file, H5RowReader), io/input_file.hpp
// (inspect_input, check_input).
#include <hdf5.h>
#include <mpi.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/isolated.hpp"
#include "io/h5_describe.hpp"
#include "io/input_file.hpp"

namespace {

std::string g_path;  // this process's scratch file under /dev/shm

[[noreturn]] void finding(const char* what, const char* detail) {
  std::fprintf(stderr, "fuzz_input_validation: FINDING: %s: %s\n", what, detail);
  std::fflush(stderr);
  std::abort();  // libFuzzer reports a deadly signal and saves the input
}

void remove_scratch() {
  unlink(g_path.c_str());
}

// A fresh file (new inode) each time: HDF5 recognises an already open file by
// device and inode, so rewriting the same inode could meet stale state.
// Runs one path's calls; only a verdict of class usage, input or io may escape.
void judged(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ringattn::Error& e) {
    if (e.error_class() == ringattn::ErrorClass::internal) finding("internal error", e.what());
  } catch (const std::exception& e) {
    finding("exception other than ringattn::Error", e.what());
  } catch (...) {
    finding("exception of unknown type", "not a std::exception");
  }
}

// What `info` and `verify --output` do with a file: describe it whole, run
// the input checks on the description, read a row of `o` the way verify does.
void info_and_verify_output() {
  const ringattn::H5FileDesc d =
      ringattn::describe_h5_file(g_path, ringattn::H5DescribeWhat{}, "file '" + g_path + "'");
  if (d.object("q") && d.object("k") && d.object("v"))
    judged([&] { (void)ringattn::check_input(d); });
  const ringattn::H5DatasetDesc* o = d.dataset("o");
  if (o == nullptr || o->dims.size() != 4 || o->dims[3] < 1 || o->dims[3] > ringattn::kMaxHeadDim)
    return;
  if (o->dims[0] < 1 || o->dims[1] < 1 || o->dims[2] < 1) return;
  std::vector<float> row(static_cast<std::size_t>(o->dims[3]));
  ringattn::H5RowReader reader(g_path);
  reader.read_rows("o", 0, 0, {0}, ringattn::DType::f32, row.data());
}

void write_scratch(const std::uint8_t* data, std::size_t size) {
  remove_scratch();
  std::FILE* f = std::fopen(g_path.c_str(), "wb");
  if (f == nullptr) finding("harness", "cannot create the scratch file");
  const bool ok = size == 0 || std::fwrite(data, 1, size, f) == size;
  if (std::fclose(f) != 0 || !ok) finding("harness", "cannot write the scratch file");
}

}  // namespace

// Sanitizer defaults baked in, so a reproduce command needs no environment.
// detect_leaks=0: clang 14's LeakSanitizer crashes at exit scanning the
// dynamic TLS of Open MPI's plugins under glibc 2.36 ("Tracer caught signal
// 11"), and the leaks it sees there come from plugins Open MPI already
// unloaded, so no suppression by library can name them. Leaks in our code are
// checked by the ASan build's unit tests (launch/run_sanitizers.sh); handle
// leaks here by the HDF5 object count below.
// allocator_may_return_null=1: malloc of an absurd size returns NULL, as
// glibc's does in production, and HDF5 reports the failure; ASan's default
// would abort there, on sizes HDF5 read from a corrupt header.
extern "C" const char* __asan_default_options() {
  return "detect_leaks=0:allocator_may_return_null=1";
}
extern "C" const char* __ubsan_default_options() {
  return "halt_on_error=1:print_stacktrace=1:report_error_type=1";
}

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  int provided = 0;
  if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    finding("harness", "MPI_Init_thread failed");
  g_path = "/dev/shm/ringattn-fuzz-" + std::to_string(getpid()) + ".h5";
  // In-process description: the fuzzer needs HDF5's crashes and its
  // coverage here, not in the child process that shields real runs from them.
  ringattn::set_isolation_enabled(false);
  std::atexit(remove_scratch);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  write_scratch(data, size);
  judged([] { (void)ringattn::inspect_input(MPI_COMM_SELF, g_path); });
  judged(info_and_verify_output);
  const ssize_t open_objects = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
  if (open_objects != 0)
    finding("HDF5 handle leak", (std::to_string(open_objects) + " HDF5 objects open").c_str());
  return 0;
}
