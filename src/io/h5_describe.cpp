// The describer of HDF5 files, run in a child process, its JSON form, and
// serial reads of selected rows (see h5_describe.hpp).
#include "io/h5_describe.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "core/error.hpp"
#include "core/isolated.hpp"
#include "io/file_identity.hpp"

namespace ringattn {

namespace {

using nlohmann::json;

// Metadata only: milliseconds, seconds on a busy parallel filesystem. A
// damaged file can send HDF5 into a loop, hence a deadline at all.
constexpr std::chrono::seconds kDescribeDeadline{300};

// Test hook: RINGATTN_TEST_DESCRIBE_DEADLINE=S shortens the deadline, so the
// tests can replay a file that loops HDF5 (tests/fuzz/regressions) in seconds.
std::chrono::seconds describe_deadline() {
  const char* e = std::getenv("RINGATTN_TEST_DESCRIBE_DEADLINE");
  const long s = e ? std::strtol(e, nullptr, 10) : 0;
  return s > 0 && s < kDescribeDeadline.count() ? std::chrono::seconds(s) : kDescribeDeadline;
}
// Attribute arrays up to this many elements are read; longer ones summarised.
constexpr hssize_t kMaxAttrElements = 64;
// Chunk cache per dataset for row reads: a few chunks of (1, 1, 4096, 256) f32
// (4 MiB each), so sampled rows of one plane decompress each chunk once.
constexpr std::size_t kChunkCacheBytes = std::size_t{64} << 20;
constexpr std::size_t kChunkCacheSlots = 12421;  // a prime, as HDF5 advises
// Row runs per H5Dread (see H5RowReader::read).
constexpr std::size_t kRunsPerRead = 256;

std::vector<std::int64_t> extent(hid_t space) {
  const int n = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> d(static_cast<std::size_t>(std::max(n, 0)));
  if (n > 0) RA_H5_CHECK(H5Sget_simple_extent_dims(space, d.data(), nullptr));
  return {d.begin(), d.end()};
}

std::string shape_text(const std::vector<std::int64_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// A float's short name: IEEE formats by their width, bf16, else "float<bits>".
// Built with += rather than "x" + std::string: GCC 12 warns falsely
// (-Wrestrict, its bug 105329) on that form once it is inlined here.
std::string float_name(hid_t type, H5TypeDesc& t) {
  std::size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
  RA_H5_CHECK(H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize));
  t.exponent_bits = static_cast<int>(esize);
  t.mantissa_bits = static_cast<int>(msize);
  const std::size_t size = static_cast<std::size_t>(t.bytes);
  const std::size_t bias = H5Tget_ebias(type);
  const bool dense = H5Tget_offset(type) == 0 && H5Tget_precision(type) == 8 * size && mpos == 0 &&
                     spos == 8 * size - 1 && epos == msize;
  // A damaged file can claim any exponent width: only the IEEE ones count.
  const bool ieee_width =
      (size == 2 && esize == 5) || (size == 4 && esize == 8) || (size == 8 && esize == 11);
  std::string name = "f";
  if (dense && ieee_width && bias == (std::size_t{1} << (esize - 1)) - 1)
    return name += std::to_string(8 * size);
  if (dense && size == 2 && esize == 8 && bias == 127) return "bf16";
  name = "float";
  return name += std::to_string(8 * size);
}

H5TypeDesc describe_type(hid_t type) {
  H5TypeDesc t;
  const H5T_class_t cls = H5Tget_class(type);
  t.cls = h5_type_class_name(cls);
  t.bytes = static_cast<std::int64_t>(H5Tget_size(type));
  if (cls == H5T_INTEGER || cls == H5T_FLOAT) {
    const H5T_order_t order = H5Tget_order(type);
    t.order = order == H5T_ORDER_LE ? "le" : order == H5T_ORDER_BE ? "be" : "other";
  }
  if (cls == H5T_INTEGER) {
    t.name = H5Tget_sign(type) == H5T_SGN_NONE ? "u" : "i";
    t.name += std::to_string(8 * static_cast<std::uint64_t>(t.bytes));
  } else if (cls == H5T_FLOAT) {
    t.name = float_name(type, t);
  } else if (cls == H5T_STRING) {
    t.name = H5Tis_variable_str(type) > 0 ? "string" : "string[" + std::to_string(t.bytes) + "]";
  } else {
    t.name = t.cls;
  }
  return t;
}

std::vector<H5FilterDesc> describe_filters(hid_t dcpl) {
  std::vector<H5FilterDesc> out;
  const int n = RA_H5_CHECK(H5Pget_nfilters(dcpl));
  for (int i = 0; i < n; ++i) {
    unsigned flags = 0, config = 0, values[8] = {};
    std::size_t n_values = std::size(values);  // in: room, out: how many the filter has
    char fname[128] = "";
    const H5Z_filter_t id = RA_H5_CHECK(H5Pget_filter2(
        dcpl, static_cast<unsigned>(i), &flags, &n_values, values, sizeof fname, fname, &config));
    H5FilterDesc f;
    f.id = static_cast<int>(id);
    f.name = fname[0] ? std::string(fname) : "filter " + std::to_string(id);
    f.params.assign(values, values + std::min(n_values, std::size(values)));
    unsigned filter_config = 0;
    f.decodes = H5Zfilter_avail(id) > 0 && H5Zget_filter_info(id, &filter_config) >= 0 &&
                (filter_config & H5Z_FILTER_CONFIG_DECODE_ENABLED);
    h5_clear_last_error();  // an unknown filter's failed lookups are not the file's fault
    out.push_back(std::move(f));
  }
  return out;
}

// Everything about an opened dataset: space, type, storage, and its file.
void describe_dataset(hid_t dset, H5DatasetDesc& d) {
  H5Handle space(RA_H5_CHECK(H5Dget_space(dset)), H5Kind::dataspace);
  const H5S_class_t sclass = H5Sget_simple_extent_type(space.get());
  d.space = sclass == H5S_SIMPLE ? "simple" : sclass == H5S_SCALAR ? "scalar" : "null";
  if (sclass == H5S_SIMPLE) d.dims = extent(space.get());
  H5Handle type(RA_H5_CHECK(H5Dget_type(dset)), H5Kind::datatype);
  d.type = describe_type(type.get());
  H5Handle dcpl(RA_H5_CHECK(H5Dget_create_plist(dset)), H5Kind::plist);
  H5Storage storage =
      h5_storage(dcpl.get(), static_cast<int>(std::max<std::size_t>(d.dims.size(), 1)));
  d.layout = std::move(storage.layout);
  d.chunk = std::move(storage.chunk);
  d.filters = describe_filters(dcpl.get());
  d.external_files = RA_H5_CHECK(H5Pget_external_count(dcpl.get()));
  d.storage_bytes = static_cast<std::int64_t>(H5Dget_storage_size(dset));
  // An external link (on the dataset or a group above it) puts the data in
  // another file, which a run reads too.
  H5Handle holder(RA_H5_CHECK(H5Iget_file_id(dset)), H5Kind::file);
  const ssize_t len = RA_H5_CHECK(H5Fget_name(holder.get(), nullptr, 0));
  d.file.assign(static_cast<std::size_t>(len) + 1, '\0');
  RA_H5_CHECK(H5Fget_name(holder.get(), d.file.data(), d.file.size()));
  d.file.resize(static_cast<std::size_t>(len));
}

// Where a soft or external link points: "/target" or "file.h5:/target".
std::string link_target(hid_t file, const std::string& name, const H5L_info_t& li) {
  std::string val(li.u.val_size + 1, '\0');
  RA_H5_CHECK(H5Lget_val(file, name.c_str(), val.data(), val.size(), H5P_DEFAULT));
  if (li.type == H5L_TYPE_SOFT) return val.c_str();
  const char* fname = nullptr;
  const char* obj = nullptr;
  unsigned flags = 0;
  RA_H5_CHECK(H5Lunpack_elink_val(val.data(), li.u.val_size, &flags, &fname, &obj));
  return std::string(fname ? fname : "?") + ":" + (obj ? obj : "?");
}

H5DatasetDesc describe_object(hid_t file, const std::string& name) {
  H5DatasetDesc d;
  d.name = name;
  // < 0: a group on the way is missing (or is no group); 0: the last name is.
  const htri_t exists = H5Lexists(file, name.c_str(), H5P_DEFAULT);
  h5_clear_last_error();
  if (exists <= 0) return d;
  H5L_info_t li{};
  RA_H5_CHECK(H5Lget_info(file, name.c_str(), &li, H5P_DEFAULT));
  if (li.type == H5L_TYPE_SOFT || li.type == H5L_TYPE_EXTERNAL)
    d.link = link_target(file, name, li);
  const hid_t obj = H5Oopen(file, name.c_str(), H5P_DEFAULT);
  if (obj < 0) {
    // A soft or external link may point nowhere; a hard link must not.
    RA_CHECK(li.type != H5L_TYPE_HARD, io, "H5Oopen failed");
    h5_clear_last_error();
    d.object = H5Object::dangling;
    return d;
  }
  H5Handle o(obj, H5Kind::object);
  switch (H5Iget_type(obj)) {
    case H5I_DATASET:
      d.object = H5Object::dataset;
      describe_dataset(obj, d);
      break;
    case H5I_GROUP:
      d.object = H5Object::group;
      break;
    case H5I_DATATYPE:
      d.object = H5Object::named_datatype;
      break;
    default:
      d.object = H5Object::other;
  }
  return d;
}

herr_t collect_link_name(hid_t, const char* name, const H5L_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}

// The one lister of a group's links: every name, in name order, one pass.
std::vector<std::string> root_links(hid_t file) {
  std::vector<std::string> names;
  hsize_t idx = 0;
  RA_H5_CHECK(H5Literate(file, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_link_name, &names));
  return names;
}

herr_t collect_attr_name(hid_t, const char* name, const H5A_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}

// A scalar string attribute's text (variable or fixed length).
std::string read_text(hid_t attr, hid_t type) {
  if (H5Tis_variable_str(type) > 0) {
    H5Handle mem(RA_H5_CHECK(H5Tcopy(H5T_C_S1)), H5Kind::datatype);
    RA_H5_CHECK(H5Tset_size(mem.get(), H5T_VARIABLE));
    RA_H5_CHECK(H5Tset_cset(mem.get(), H5Tget_cset(type)));
    char* s = nullptr;
    RA_H5_CHECK(H5Aread(attr, mem.get(), &s));
    std::string out(s ? s : "");
    H5free_memory(s);
    return out;
  }
  std::string s(H5Tget_size(type), '\0');
  RA_H5_CHECK(H5Aread(attr, type, s.data()));
  s.resize(std::strlen(s.c_str()));             // null-terminated or null-padded
  if (H5Tget_strpad(type) == H5T_STR_SPACEPAD)  // Fortran's padding
    while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

// Numbers, scalar or 1-D: int64 (uint64 beyond int64 as decimal text) or double.
bool read_numbers(hid_t attr, hid_t type, std::size_t count, bool scalar, AttrValue& out) {
  if (H5Tget_class(type) == H5T_FLOAT) {
    std::vector<double> v(count);
    RA_H5_CHECK(H5Aread(attr, H5T_NATIVE_DOUBLE, v.data()));
    out = scalar ? AttrValue(v[0]) : AttrValue(std::move(v));
    return true;
  }
  if (H5Tget_sign(type) == H5T_SGN_NONE && H5Tget_size(type) >= 8) {
    std::vector<std::uint64_t> u(count);
    RA_H5_CHECK(H5Aread(attr, H5T_NATIVE_UINT64, u.data()));
    const auto big = [](std::uint64_t x) { return x > std::uint64_t{INT64_MAX}; };
    if (std::any_of(u.begin(), u.end(), big)) {
      if (!scalar) return false;
      out = std::to_string(u[0]);
      return true;
    }
  }
  std::vector<std::int64_t> v(count);
  RA_H5_CHECK(H5Aread(attr, H5T_NATIVE_INT64, v.data()));
  out = scalar ? AttrValue(v[0]) : AttrValue(std::move(v));
  return true;
}

H5AttributeDesc describe_attribute(hid_t loc, const std::string& name) {
  H5AttributeDesc a;
  a.name = name;
  H5Handle attr(RA_H5_CHECK(H5Aopen(loc, name.c_str(), H5P_DEFAULT)), H5Kind::attribute);
  H5Handle space(RA_H5_CHECK(H5Aget_space(attr.get())), H5Kind::dataspace);
  H5Handle type(RA_H5_CHECK(H5Aget_type(attr.get())), H5Kind::datatype);
  const H5T_class_t cls = H5Tget_class(type.get());
  const H5S_class_t scls = H5Sget_simple_extent_type(space.get());
  const hssize_t n = RA_H5_CHECK(H5Sget_simple_extent_npoints(space.get()));
  const std::vector<std::int64_t> dims = extent(space.get());
  const std::string type_name = describe_type(type.get()).name;
  const auto summarise = [&](std::string what) {
    if (!dims.empty()) (what += ' ') += shape_text(dims);
    a.value = std::move(what);
    a.summary = true;
    return a;
  };
  if (scls == H5S_NULL) return summarise(type_name + " (empty)");
  const bool scalar = scls == H5S_SCALAR || n == 1;
  if (cls == H5T_STRING && scalar) {
    a.value = read_text(attr.get(), type.get());
    return a;
  }
  const bool number = cls == H5T_INTEGER || cls == H5T_FLOAT;
  if (!number || (!scalar && dims.size() != 1) || n > kMaxAttrElements ||
      !read_numbers(attr.get(), type.get(), static_cast<std::size_t>(n), scalar, a.value))
    return summarise(type_name);
  return a;
}

// Runs fn on a file that opened: an HDF5 call failing there means its
// metadata is damaged (class input, as a crash would be), not that the path
// is unreadable (the open already proved it is not).
template <class Fn>
void as_damaged(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    if (e.error_class() != ErrorClass::io) throw;
    throw Error(ErrorClass::input, detail::insert_before_tail(e.what(), ": the file is damaged"));
  }
}

H5FileDesc describe_here(const std::string& path, const H5DescribeWhat& what,
                         const std::string& ctx) {
  H5Quiet quiet;
  H5FileDesc d;
  d.path = path;
  H5Handle file = h5_open_read_serial(path, ctx);
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) d.size_bytes = static_cast<std::int64_t>(st.st_size);
  as_damaged([&] {
    d.root = with_h5_context(ctx, [&] { return root_links(file.get()); });
    const auto add = [&](const std::string& name) {
      d.objects.push_back(with_h5_context(ctx + ", dataset '" + name + "'",
                                          [&] { return describe_object(file.get(), name); }));
    };
    if (what.root_objects)
      for (const auto& name : d.root) add(name);
    for (const auto& name : what.names)
      if (d.object(name) == nullptr) add(name);
    if (!what.attributes) return;
    std::vector<std::string> names;
    with_h5_context(ctx, [&] {
      hsize_t idx = 0;
      RA_H5_CHECK(
          H5Aiterate2(file.get(), H5_INDEX_NAME, H5_ITER_INC, &idx, collect_attr_name, &names));
    });
    for (const auto& name : names)
      d.attributes.push_back(with_h5_context(ctx + ", attribute '" + name + "'",
                                             [&] { return describe_attribute(file.get(), name); }));
  });
  as_damaged([&] { with_h5_context(ctx, [&] { file.close(); }); });
  return d;
}

}  // namespace

bool H5TypeDesc::ieee_dtype(DType& out) const {
  if (cls != "float" || (order != "le" && order != "be")) return false;
  if (name == "f32") out = DType::f32;
  if (name == "f16") out = DType::f16;
  return name == "f32" || name == "f16";
}

const char* h5_object_name(H5Object o) {
  switch (o) {
    case H5Object::missing:
      return "missing";
    case H5Object::dangling:
      return "link that resolves to nothing";
    case H5Object::dataset:
      return "dataset";
    case H5Object::group:
      return "group";
    case H5Object::named_datatype:
      return "named datatype";
    case H5Object::other:
      return "object of unknown kind";
  }
  return "?";
}

const H5DatasetDesc* H5FileDesc::object(const std::string& name) const {
  for (const auto& d : objects)
    if (d.name == name) return &d;
  return nullptr;
}

const H5DatasetDesc* H5FileDesc::dataset(const std::string& name) const {
  const H5DatasetDesc* d = object(name);
  return d && d->object == H5Object::dataset ? d : nullptr;
}

const H5AttributeDesc* H5FileDesc::attribute(const std::string& name) const {
  for (const auto& a : attributes)
    if (a.name == name) return &a;
  return nullptr;
}

// ---- JSON: field lists, one per struct ------------------------------------------

NLOHMANN_JSON_SERIALIZE_ENUM(H5Object, {{H5Object::missing, "missing"},
                                        {H5Object::dangling, "dangling"},
                                        {H5Object::dataset, "dataset"},
                                        {H5Object::group, "group"},
                                        {H5Object::named_datatype, "named_datatype"},
                                        {H5Object::other, "other"}})

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(H5TypeDesc, cls, bytes, name, order, exponent_bits,
                                   mantissa_bits)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(H5FilterDesc, name, id, params, decodes)

// A field list written once for both directions: nlohmann's
// NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE without its `inline`, as the header
// declares these for other files.
#define RA_JSON_FIELDS(Type, ...)                                              \
  void to_json(json& nlohmann_json_j, const Type& nlohmann_json_t) {           \
    NLOHMANN_JSON_EXPAND(NLOHMANN_JSON_PASTE(NLOHMANN_JSON_TO, __VA_ARGS__))   \
  }                                                                            \
  void from_json(const json& nlohmann_json_j, Type& nlohmann_json_t) {         \
    NLOHMANN_JSON_EXPAND(NLOHMANN_JSON_PASTE(NLOHMANN_JSON_FROM, __VA_ARGS__)) \
  }

RA_JSON_FIELDS(H5DatasetDesc, name, object, link, space, dims, type, layout, chunk, filters,
               external_files, storage_bytes, file)

// The value with its alternative's index: an int64 1 stays int64, not double.
void to_json(json& j, const H5AttributeDesc& a) {
  json v;
  std::visit([&](const auto& x) { v = x; }, a.value);
  j = {{"name", a.name}, {"kind", a.value.index()}, {"value", v}, {"summary", a.summary}};
}

void from_json(const json& j, H5AttributeDesc& a) {
  j.at("name").get_to(a.name);
  j.at("summary").get_to(a.summary);
  const json& v = j.at("value");
  switch (j.at("kind").get<std::size_t>()) {
    case 0:
      a.value = v.get<std::string>();
      break;
    case 1:
      a.value = v.get<std::int64_t>();
      break;
    case 2:
      a.value = v.get<double>();
      break;
    case 3:
      a.value = v.get<std::vector<std::int64_t>>();
      break;
    default:
      a.value = v.get<std::vector<double>>();
  }
}

RA_JSON_FIELDS(H5FileDesc, path, size_bytes, root, objects, attributes)

// ---- the isolated describer -----------------------------------------------------

H5FileDesc describe_h5_file(const std::string& path, const H5DescribeWhat& what,
                            const std::string& ctx) {
  check_readable_file(path, ctx);  // nothing to fork for: a missing path, a FIFO, ...
  const IsolatedResult r = run_isolated(
      [&] {
        const std::vector<std::uint8_t> bytes = json::to_cbor(json(describe_here(path, what, ctx)));
        return std::string(bytes.begin(), bytes.end());
      },
      describe_deadline());
  switch (r.status) {
    case IsolatedResult::Status::done:
      break;
    case IsolatedResult::Status::failed:
      throw Error(r.error_class, r.message);  // the child's text, as is
    case IsolatedResult::Status::crashed:
      RA_FAIL(input, ctx, ": the HDF5 library ", r.describe(),
              " reading it: the file is damaged; check it with h5dump, or write it again");
    case IsolatedResult::Status::timed_out:
      RA_FAIL(input, ctx, ": the HDF5 library ", r.describe(),
              " reading its metadata: the file is damaged, or its filesystem is stuck");
    case IsolatedResult::Status::lost:
      RA_FAIL(internal, ctx, ": the process describing it ", r.describe());
  }
  const json j = json::from_cbor(r.value, true, /*allow_exceptions=*/false);
  RA_CHECK(!j.is_discarded(), internal, ctx, ": its description came back unreadable");
  return j.get<H5FileDesc>();
}

// ---- serial row reads -----------------------------------------------------------

H5RowReader::H5RowReader(const std::string& path) : path_(path) {
  H5Quiet quiet;
  file_ = h5_open_read_serial(path, "file '" + path + "'");
}

hid_t H5RowReader::open_dataset(const std::string& name) {
  if (auto it = dsets_.find(name); it != dsets_.end()) return it->second.get();
  const htri_t exists = H5Lexists(file_.get(), name.c_str(), H5P_DEFAULT);
  h5_clear_last_error();
  RA_CHECK(exists > 0, input, "no such dataset");
  H5Handle dapl(RA_H5_CHECK(H5Pcreate(H5P_DATASET_ACCESS)), H5Kind::plist);
  RA_H5_CHECK(H5Pset_chunk_cache(dapl.get(), kChunkCacheSlots, kChunkCacheBytes, 1.0));
  const hid_t d = H5Dopen2(file_.get(), name.c_str(), dapl.get());
  RA_CHECK(d >= 0, input, "is not a dataset");
  return dsets_.emplace(name, H5Handle(d, H5Kind::dataset)).first->second.get();
}

std::vector<std::int64_t> H5RowReader::dims(const std::string& dataset) {
  H5Quiet quiet;
  return with_h5_context("file '" + path_ + "', dataset '" + dataset + "'", [&] {
    H5Handle space(RA_H5_CHECK(H5Dget_space(open_dataset(dataset))), H5Kind::dataspace);
    return extent(space.get());
  });
}

void H5RowReader::read(const std::string& dataset, std::int64_t b, std::int64_t h,
                       const std::vector<std::pair<std::int64_t, std::int64_t>>& runs,
                       DType mem_type, void* out) {
  H5Quiet quiet;
  with_h5_context("file '" + path_ + "', dataset '" + dataset + "'", [&] {
    const hid_t dset = open_dataset(dataset);
    H5Handle type(RA_H5_CHECK(H5Dget_type(dset)), H5Kind::datatype);
    RA_CHECK(H5Tget_class(type.get()) == H5T_FLOAT, input, "holds ",
             h5_type_class_name(H5Tget_class(type.get())), " elements; expected floats");
    H5Handle space(RA_H5_CHECK(H5Dget_space(dset)), H5Kind::dataspace);
    const std::vector<std::int64_t> dims = extent(space.get());
    RA_CHECK(dims.size() == 3 || dims.size() == 4, input, "has shape ", shape_text(dims),
             "; expected [B, H, N] or [B, H, N, D]");
    RA_CHECK(b >= 0 && b < dims[0] && h >= 0 && h < dims[1], usage, "plane (", b, ", ", h,
             ") outside shape ", shape_text(dims));
    const hsize_t D = dims.size() == 4 ? static_cast<hsize_t>(dims[3]) : 1;
    H5Handle mtype = h5_float_type(mem_type);
    char* dst = static_cast<char*>(out);
    // A few hundred runs per H5Dread: HDF5's cost of OR-ing hyperslabs into
    // one selection grows faster than linearly with their number.
    for (std::size_t r0 = 0; r0 < runs.size(); r0 += kRunsPerRead) {
      const std::size_t r1 = std::min(runs.size(), r0 + kRunsPerRead);
      hsize_t total = 0;
      for (std::size_t r = r0; r < r1; ++r) {
        const auto [first, count] = runs[r];
        RA_CHECK(first >= 0 && count > 0 && first + count <= dims[2], usage, "rows [", first, ", ",
                 first + count, ") outside shape ", shape_text(dims));
        const hsize_t start[4] = {hsize_t(b), hsize_t(h), hsize_t(first), 0};
        const hsize_t cnt[4] = {1, 1, hsize_t(count), D};
        RA_H5_CHECK(H5Sselect_hyperslab(space.get(), r == r0 ? H5S_SELECT_SET : H5S_SELECT_OR,
                                        start, nullptr, cnt, nullptr));
        total += hsize_t(count);
      }
      const hsize_t mem_n = total * D;
      H5Handle mem(RA_H5_CHECK(H5Screate_simple(1, &mem_n, nullptr)), H5Kind::dataspace);
      RA_H5_CHECK(H5Dread(dset, mtype.get(), mem.get(), space.get(), H5P_DEFAULT, dst));
      dst += mem_n * dtype_size(mem_type);
    }
  });
}

void H5RowReader::read_rows(const std::string& dataset, std::int64_t b, std::int64_t h,
                            const std::vector<std::int64_t>& rows, DType mem_type, void* out) {
  std::vector<std::pair<std::int64_t, std::int64_t>> runs;  // (first row, count)
  for (std::size_t i = 0; i < rows.size(); ++i) {
    RA_CHECK(i == 0 || rows[i] > rows[i - 1], internal, "rows must increase");
    if (!runs.empty() && runs.back().first + runs.back().second == rows[i])
      ++runs.back().second;
    else
      runs.emplace_back(rows[i], 1);
  }
  read(dataset, b, h, runs, mem_type, out);
}

void H5RowReader::read_plane(const std::string& dataset, std::int64_t b, std::int64_t h,
                             DType mem_type, void* out) {
  const std::vector<std::int64_t> d = dims(dataset);
  RA_CHECK(d.size() >= 3, input, "file '", path_, "', dataset '", dataset, "': has shape ",
           shape_text(d), "; expected [B, H, N] or [B, H, N, D]");
  read(dataset, b, h, {{0, d[2]}}, mem_type, out);
}

// One root attribute, replacing any of its name: text as variable-length
// UTF-8 (h5py reads it back as str), numbers as little-endian int64 or
// float64, arrays 1-D (an empty one with a null dataspace).
void write_root_attribute(hid_t root, const std::string& name, const AttrValue& value) {
  if (RA_H5_CHECK(H5Aexists(root, name.c_str())) > 0) RA_H5_CHECK(H5Adelete(root, name.c_str()));
  H5Handle type;
  hid_t mem = H5I_INVALID_HID;
  const void* buf = nullptr;
  const char* text = nullptr;
  hsize_t n = 1;
  bool array = false;
  const auto numbers = [&](hid_t file_type, hid_t mem_type, const void* data, std::size_t count) {
    type = H5Handle(RA_H5_CHECK(H5Tcopy(file_type)), H5Kind::datatype);
    mem = mem_type;
    buf = data;
    n = count;
  };
  if (const auto* s = std::get_if<std::string>(&value)) {
    type = H5Handle(RA_H5_CHECK(H5Tcopy(H5T_C_S1)), H5Kind::datatype);
    RA_H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE));
    RA_H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8));
    mem = type.get();
    text = s->c_str();
    buf = &text;
  } else if (const auto* i = std::get_if<std::int64_t>(&value)) {
    numbers(H5T_STD_I64LE, H5T_NATIVE_INT64, i, 1);
  } else if (const auto* d = std::get_if<double>(&value)) {
    numbers(H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, d, 1);
  } else if (const auto* iv = std::get_if<std::vector<std::int64_t>>(&value)) {
    array = true;
    numbers(H5T_STD_I64LE, H5T_NATIVE_INT64, iv->data(), iv->size());
  } else {
    const auto& dv = std::get<std::vector<double>>(value);
    array = true;
    numbers(H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, dv.data(), dv.size());
  }
  H5Handle space(RA_H5_CHECK(!array  ? H5Screate(H5S_SCALAR)
                             : n > 0 ? H5Screate_simple(1, &n, nullptr)
                                     : H5Screate(H5S_NULL)),
                 H5Kind::dataspace);
  H5Handle attr(RA_H5_CHECK(H5Acreate2(root, name.c_str(), type.get(), space.get(), H5P_DEFAULT,
                                       H5P_DEFAULT)),
                H5Kind::attribute);
  if (n > 0) RA_H5_CHECK(H5Awrite(attr.get(), mem, buf));
  attr.close();
}

}  // namespace ringattn
