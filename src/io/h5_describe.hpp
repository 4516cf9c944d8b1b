// The one description of an HDF5 file: what its root holds, and for each
// dataset asked about, what the name leads to (a dataset, a group, a link
// that resolves to nothing, nothing at all) and how the dataset is stored
// (shape, element type, byte order, layout, chunks, filters and whether this
// HDF5 can decode them, external raw files, the file its data lives in).
// Input validation (input_file.hpp) is a set of checks over it, `info`
// prints it, `verify` reads a run's attributes from it, and the output
// writer checks a partial file's records with it.
//
// A description is facts, not verdicts: a missing dataset, a group where a
// dataset was asked for, a type this tool does not read are recorded, and
// the caller's checks decide. What the describer itself refuses is what it
// cannot look at: a path that is missing, not a regular file or unreadable
// (Error io), not HDF5, truncated or corrupt (Error input), locked by a
// writer (Error io).
//
// Every file a subcommand opens is described first in a child process with
// a deadline (core/isolated.hpp): HDF5 1.10 crashes or loops on some
// damaged files, and such a file is then one Error(input) for the caller
// instead of a dead process. Only a file described without trouble is
// opened in-process afterwards (row reads, the collective open).
//
// Includes: core/dtype.hpp (DType), io/h5_handle.hpp (H5Handle),
// nlohmann/json.hpp (a description crosses the child's pipe and the ranks'
// broadcast as JSON).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "core/dtype.hpp"
#include "io/h5_handle.hpp"

namespace ringattn {

// A dataset's element type, as far as the checks and `info` need it.
struct H5TypeDesc {
  std::string cls;  // "float", "integer", "string", "compound", ... (h5_type_class_name)
  std::int64_t bytes = 0;
  // Short name: "f32", "f16", "f64" (IEEE binary32/16/64, dense, standard
  // bias), "bf16", "i32", "u8", "string", "string[4]", "compound", or for a
  // float of another format "float<bits>".
  std::string name;
  std::string order;      // "le", "be", or "" where it has none (strings, compounds)
  int exponent_bits = 0;  // floats only
  int mantissa_bits = 0;  // floats only

  // f32 or f16 when the type is exactly IEEE binary32 or binary16 (either
  // byte order), else nullopt-like: returns false.
  bool ieee_dtype(DType& out) const;
};

struct H5FilterDesc {
  std::string name;              // HDF5's name ("deflate", "shuffle", ...) or "filter <id>"
  int id = 0;                    // H5Z_filter_t
  std::vector<unsigned> params;  // client data (deflate: the level)
  bool decodes = false;          // this HDF5 library can decode it (filter available, decode on)
};

// What a name in the file leads to.
enum class H5Object { missing, dangling, dataset, group, named_datatype, other };
const char* h5_object_name(H5Object o);  // "missing", "unresolvable link", "dataset", ...

struct H5DatasetDesc {
  std::string name;  // the path asked for (or a root link's name)
  H5Object object = H5Object::missing;
  std::string link;  // a soft or external link's target ("/x", "f.h5:/x")
  // The rest only for H5Object::dataset.
  std::string space;               // "simple", "scalar" or "null"
  std::vector<std::int64_t> dims;  // empty unless simple
  H5TypeDesc type;
  std::string layout;                 // "contiguous", "chunked", "compact", "virtual", "unknown"
  std::vector<std::int64_t> chunk;    // chunk dims when chunked
  std::vector<H5FilterDesc> filters;  // filter pipeline, in order
  int external_files = 0;             // raw data in external files (H5Pset_external)
  std::int64_t storage_bytes = 0;     // bytes the data occupies in the file
  std::string file;                   // the file its data lives in, as HDF5 opened it (an
                                      // external link can put it in another one)
};

// A root attribute's value: the one attribute type, read (`info`, `verify`,
// a partial file's records) and written (OutputFile::set_attribute) alike:
// text, int64, double, or a 1-D array of either number.
using AttrValue =
    std::variant<std::string, std::int64_t, double, std::vector<std::int64_t>, std::vector<double>>;

// Writes one root attribute of an open file, replacing any of its name: text
// as variable-length UTF-8 (h5py reads it back as str), numbers as
// little-endian int64 or float64, arrays 1-D. In a parallel file every rank
// calls it with the same arguments (metadata is written collectively).
void write_root_attribute(hid_t file, const std::string& name, const AttrValue& value);

struct H5AttributeDesc {
  std::string name;
  AttrValue value;
  bool summary = false;  // value is text describing the attribute ("compound [3]"), not its data
};

struct H5FileDesc {
  std::string path;
  std::int64_t size_bytes = 0;
  std::vector<std::string> root;            // every link of the root group, in name order
  std::vector<H5DatasetDesc> objects;       // what was described: root links, then names asked for
  std::vector<H5AttributeDesc> attributes;  // root attributes, by name (when asked for)

  // The description of `name` when it is a dataset (nullptr otherwise).
  const H5DatasetDesc* dataset(const std::string& name) const;
  // The description of `name`, whatever it leads to (nullptr: not described).
  const H5DatasetDesc* object(const std::string& name) const;
  const H5AttributeDesc* attribute(const std::string& name) const;
};

// What to describe beyond the root's list of names.
struct H5DescribeWhat {
  bool root_objects = true;        // every root link's object (info, verify, partial files)
  bool attributes = true;          // root attributes
  std::vector<std::string> names;  // these paths too (input datasets: may be "grp/q")
};

// Describes `path` in a child process (see above). `ctx` starts every
// message ("input file 'in.h5'"). The same Error classes as the describer.
H5FileDesc describe_h5_file(const std::string& path, const H5DescribeWhat& what,
                            const std::string& ctx);

// A description as JSON and back (the child's pipe, the ranks' broadcast).
void to_json(nlohmann::json& j, const H5FileDesc& d);
void from_json(const nlohmann::json& j, H5FileDesc& d);
void to_json(nlohmann::json& j, const H5DatasetDesc& d);
void from_json(const nlohmann::json& j, H5DatasetDesc& d);
void to_json(nlohmann::json& j, const H5AttributeDesc& a);
void from_json(const nlohmann::json& j, H5AttributeDesc& a);

// A file opened read-only on this process for reads of selected rows. Open
// it only on a file describe_h5_file described without error.
class H5RowReader {
 public:
  explicit H5RowReader(const std::string& path);

  const std::string& path() const { return path_; }

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
  std::vector<std::int64_t> dims(const std::string& dataset);
  void read(const std::string& dataset, std::int64_t b, std::int64_t h,
            const std::vector<std::pair<std::int64_t, std::int64_t>>& runs, DType mem_type,
            void* out);

  std::string path_;
  // Destroyed bottom-up: datasets close before the file.
  H5Handle file_;
  std::map<std::string, H5Handle> dsets_;
};

}  // namespace ringattn
