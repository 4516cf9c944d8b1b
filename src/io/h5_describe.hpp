// Serial looks into any HDF5 file, for the one-process subcommands (`info`,
// `verify`): what the root holds (datasets with shape, type, layout, chunks
// and filters; root attributes with their values), and reads of a few rows of
// a [B, H, N, D] or [B, H, N] dataset.
//
// Everything here opens files with the serial (sec2) driver on the calling
// process alone: no collective, no communicator. The parallel path of a run
// is input_file.hpp and output_file.hpp.
//
// Error classes, as in input_file.hpp: a missing or unreadable path is `io`;
// a file that is there but not HDF5 (or truncated) is `input`; a dataset
// that is absent or of the wrong rank or type is `input`. Messages name the
// file and dataset and stay on one line.
//
// Includes: core/dtype.hpp (DType), io/h5_handle.hpp (H5Handle).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "core/dtype.hpp"
#include "io/h5_handle.hpp"

namespace ringattn {

struct H5FilterDesc {
  std::string name;              // HDF5's name ("deflate", "shuffle", ...) or "filter <id>"
  int id = 0;                    // H5Z_filter_t
  std::vector<unsigned> params;  // client data (deflate: the level)
};

struct H5DatasetDesc {
  std::string name;                   // link name in the root group
  std::vector<std::int64_t> dims;     // empty for a scalar
  std::string dtype;                  // "f32", "f16", "bf16", "f64", "i64", "u8", "string", ...
  bool big_endian = false;            // numbers stored big-endian
  std::string layout;                 // "contiguous", "chunked", "compact" or "virtual"
  std::vector<std::int64_t> chunk;    // chunk dims when chunked
  std::vector<H5FilterDesc> filters;  // filter pipeline, in order
  std::int64_t storage_bytes = 0;     // bytes the data occupies in the file
};

// A root attribute's value: scalars, 1-D numeric arrays, or (summary) a text
// describing what was not read ("compound [3]").
using H5AttrValue =
    std::variant<std::string, std::int64_t, double, std::vector<std::int64_t>, std::vector<double>>;

struct H5AttributeDesc {
  std::string name;
  H5AttrValue value;
  bool summary = false;  // value is a description of the attribute, not its data
};

struct H5FileDesc {
  std::string path;
  std::int64_t size_bytes = 0;
  std::vector<H5DatasetDesc> datasets;      // root datasets, by name
  std::vector<std::string> other_links;     // root groups and other objects: "name (group)"
  std::vector<H5AttributeDesc> attributes;  // root attributes, by name

  const H5DatasetDesc* dataset(const std::string& name) const;
  const H5AttributeDesc* attribute(const std::string& name) const;
};

// Opens `path` read-only on this process and describes its root.
H5FileDesc describe_h5_file(const std::string& path);

// A file opened read-only on this process for reads of selected rows.
class H5RowReader {
 public:
  explicit H5RowReader(const std::string& path);

  const std::string& path() const { return path_; }
  // Dimensions of a dataset (throws Error(input) when absent).
  std::vector<std::int64_t> dims(const std::string& dataset);

  // Reads rows `rows` (sorted ascending, distinct) of plane (b, h) of a
  // dataset shaped [B, H, N, D] or [B, H, N]:
  //   out  (rows.size(), D) or (rows.size()) elements of mem_type (f32 or f16), dense
  // Consecutive rows are joined into runs, one hyperslab each, a few hundred
  // runs per H5Dread.
  void read_rows(const std::string& dataset, std::int64_t b, std::int64_t h,
                 const std::vector<std::int64_t>& rows, DType mem_type, void* out);
  // Reads the whole plane (b, h): rows [0, N).
  void read_plane(const std::string& dataset, std::int64_t b, std::int64_t h, DType mem_type,
                  void* out);

 private:
  hid_t open_dataset(const std::string& dataset);
  void read(const std::string& dataset, std::int64_t b, std::int64_t h,
            const std::vector<std::pair<std::int64_t, std::int64_t>>& runs, DType mem_type,
            void* out);

  std::string path_;
  // Destroyed bottom-up: datasets close before the file.
  H5Handle file_;
  std::map<std::string, H5Handle> dsets_;
};

}  // namespace ringattn
