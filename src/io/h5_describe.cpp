// Serial description of an HDF5 file's root, and serial reads of selected
// rows (see h5_describe.hpp).
#include "io/h5_describe.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include "core/error.hpp"

namespace ringattn {

namespace {

// Attribute arrays up to this many elements are read; longer ones summarised.
constexpr hssize_t kMaxAttrElements = 64;
// Chunk cache per dataset for row reads: a few chunks of (1, 1, 4096, 256) f32
// (4 MiB each), so sampled rows of one plane decompress each chunk once.
constexpr std::size_t kChunkCacheBytes = std::size_t{64} << 20;
constexpr std::size_t kChunkCacheSlots = 12421;  // a prime, as HDF5 advises
// Row runs per H5Dread (see H5RowReader::read).
constexpr std::size_t kRunsPerRead = 256;

std::string file_context(const std::string& path) {
  return "file '" + path + "'";
}

// Short type names, numpy-like: f32, f16, bf16, f64, i32, u8, string, ...
std::string type_text(hid_t type, bool& big_endian) {
  big_endian = false;
  const H5T_class_t cls = H5Tget_class(type);
  const std::size_t size = H5Tget_size(type);
  if (cls == H5T_INTEGER || cls == H5T_FLOAT) big_endian = H5Tget_order(type) == H5T_ORDER_BE;
  // Built with += rather than "x" + std::string: GCC 12 warns falsely
  // (-Wrestrict, its bug 105329) on that form once it is inlined here.
  if (cls == H5T_INTEGER) {
    std::string t = H5Tget_sign(type) == H5T_SGN_NONE ? "u" : "i";
    return t += std::to_string(8 * size);
  }
  if (cls == H5T_FLOAT) {
    std::size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
    if (H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) >= 0) {
      if (size == 2 && esize == 5 && msize == 10) return "f16";
      if (size == 2 && esize == 8 && msize == 7) return "bf16";
    }
    std::string t = "f";
    return t += std::to_string(8 * size);
  }
  if (cls == H5T_STRING) {
    const htri_t var = H5Tis_variable_str(type);
    return var > 0 ? "string" : "string[" + std::to_string(size) + "]";
  }
  return h5_type_class_name(cls);
}

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

H5DatasetDesc describe_dataset(hid_t dset, const std::string& name) {
  H5DatasetDesc d;
  d.name = name;
  H5Handle space(RA_H5_CHECK(H5Dget_space(dset)), H5Kind::dataspace);
  d.dims = extent(space.get());
  H5Handle type(RA_H5_CHECK(H5Dget_type(dset)), H5Kind::datatype);
  d.dtype = type_text(type.get(), d.big_endian);
  H5Handle dcpl(RA_H5_CHECK(H5Dget_create_plist(dset)), H5Kind::plist);
  H5Storage storage = h5_storage(dcpl.get(), static_cast<int>(d.dims.size()));
  d.layout = std::move(storage.layout);
  d.chunk = std::move(storage.chunk);
  const int nfilters = RA_H5_CHECK(H5Pget_nfilters(dcpl.get()));
  for (int i = 0; i < nfilters; ++i) {
    unsigned flags = 0, config = 0, values[8] = {};
    std::size_t n_values = std::size(values);  // in: room, out: how many the filter has
    char fname[128] = "";
    const H5Z_filter_t id =
        RA_H5_CHECK(H5Pget_filter2(dcpl.get(), static_cast<unsigned>(i), &flags, &n_values, values,
                                   sizeof fname, fname, &config));
    H5FilterDesc f;
    f.id = static_cast<int>(id);
    f.name = fname[0] ? std::string(fname) : "filter " + std::to_string(id);
    f.params.assign(values, values + std::min(n_values, std::size(values)));
    d.filters.push_back(std::move(f));
  }
  d.storage_bytes = static_cast<std::int64_t>(H5Dget_storage_size(dset));
  return d;
}

herr_t collect_attr_name(hid_t, const char* name, const H5A_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
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
  bool be = false;
  const auto summarise = [&](const std::string& what) {
    a.value = what;
    a.summary = true;
    return a;
  };
  if (scls == H5S_NULL) return summarise(type_text(type.get(), be) + " (empty)");

  const bool scalar = scls == H5S_SCALAR || n == 1;
  if (cls == H5T_STRING && scalar) {
    if (H5Tis_variable_str(type.get()) > 0) {
      H5Handle mem(RA_H5_CHECK(H5Tcopy(H5T_C_S1)), H5Kind::datatype);
      RA_H5_CHECK(H5Tset_size(mem.get(), H5T_VARIABLE));
      RA_H5_CHECK(H5Tset_cset(mem.get(), H5Tget_cset(type.get())));
      char* s = nullptr;
      RA_H5_CHECK(H5Aread(attr.get(), mem.get(), &s));
      a.value = std::string(s ? s : "");
      H5free_memory(s);
    } else {
      std::string s(H5Tget_size(type.get()), '\0');
      RA_H5_CHECK(H5Aread(attr.get(), type.get(), s.data()));
      s.resize(std::strlen(s.c_str()));                   // null-terminated or null-padded
      if (H5Tget_strpad(type.get()) == H5T_STR_SPACEPAD)  // Fortran's padding
        while (!s.empty() && s.back() == ' ') s.pop_back();
      a.value = s;
    }
    return a;
  }
  const bool number = cls == H5T_INTEGER || cls == H5T_FLOAT;
  if (!number || (!scalar && dims.size() != 1) || n > kMaxAttrElements) {
    std::string what = type_text(type.get(), be);
    if (!dims.empty()) (what += ' ') += shape_text(dims);
    return summarise(what);
  }
  const std::size_t count = static_cast<std::size_t>(n);
  if (cls == H5T_INTEGER && H5Tget_sign(type.get()) == H5T_SGN_NONE &&
      H5Tget_size(type.get()) >= 8) {
    // uint64 may not fit int64: such a value is kept as its decimal text.
    std::vector<std::uint64_t> u(count);
    RA_H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_UINT64, u.data()));
    const auto big = [](std::uint64_t x) { return x > std::uint64_t{INT64_MAX}; };
    if (std::any_of(u.begin(), u.end(), big)) {
      if (!scalar) return summarise(type_text(type.get(), be) + " " + shape_text(dims));
      a.value = std::to_string(u[0]);
      return a;
    }
  }
  if (cls == H5T_INTEGER) {
    std::vector<std::int64_t> v(count);
    RA_H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_INT64, v.data()));
    if (scalar)
      a.value = v[0];
    else
      a.value = std::move(v);
  } else {
    std::vector<double> v(count);
    RA_H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_DOUBLE, v.data()));
    if (scalar)
      a.value = v[0];
    else
      a.value = std::move(v);
  }
  return a;
}

// Names of the root's links, in name order.
std::vector<std::string> root_links(hid_t file) {
  H5G_info_t g{};
  RA_H5_CHECK(H5Gget_info(file, &g));
  std::vector<std::string> names;
  for (hsize_t i = 0; i < g.nlinks; ++i) {
    const ssize_t len = RA_H5_CHECK(
        H5Lget_name_by_idx(file, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT));
    std::string name(static_cast<std::size_t>(len) + 1, '\0');
    RA_H5_CHECK(H5Lget_name_by_idx(file, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(),
                                   name.size(), H5P_DEFAULT));
    name.resize(static_cast<std::size_t>(len));
    names.push_back(std::move(name));
  }
  return names;
}

}  // namespace

const H5DatasetDesc* H5FileDesc::dataset(const std::string& name) const {
  for (const auto& d : datasets)
    if (d.name == name) return &d;
  return nullptr;
}

const H5AttributeDesc* H5FileDesc::attribute(const std::string& name) const {
  for (const auto& a : attributes)
    if (a.name == name) return &a;
  return nullptr;
}

H5FileDesc describe_h5_file(const std::string& path) {
  H5Quiet quiet;
  H5FileDesc desc;
  desc.path = path;
  H5Handle file = h5_open_read_serial(path, file_context(path));
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) desc.size_bytes = static_cast<std::int64_t>(st.st_size);
  const std::string ctx = file_context(path);

  const std::vector<std::string> links =
      with_h5_context(ctx, [&] { return root_links(file.get()); });
  for (const auto& name : links) {
    with_h5_context(ctx + ", object '" + name + "'", [&] {
      const hid_t obj = H5Oopen(file.get(), name.c_str(), H5P_DEFAULT);
      if (obj < 0) {  // a dangling soft or external link
        h5_clear_last_error();
        desc.other_links.push_back(name + " (unresolvable link)");
        return;
      }
      H5Handle o(obj, H5Kind::object);
      switch (H5Iget_type(obj)) {
        case H5I_DATASET:
          desc.datasets.push_back(describe_dataset(obj, name));
          break;
        case H5I_GROUP:
          desc.other_links.push_back(name + " (group)");
          break;
        case H5I_DATATYPE:
          desc.other_links.push_back(name + " (named datatype)");
          break;
        default:
          desc.other_links.push_back(name + " (unknown object)");
      }
    });
  }

  std::vector<std::string> attr_names;
  with_h5_context(ctx, [&] {
    hsize_t idx = 0;
    RA_H5_CHECK(
        H5Aiterate2(file.get(), H5_INDEX_NAME, H5_ITER_INC, &idx, collect_attr_name, &attr_names));
  });
  for (const auto& name : attr_names)
    desc.attributes.push_back(with_h5_context(
        ctx + ", attribute '" + name + "'", [&] { return describe_attribute(file.get(), name); }));
  with_h5_context(ctx, [&] { file.close(); });
  return desc;
}

H5RowReader::H5RowReader(const std::string& path) : path_(path) {
  H5Quiet quiet;
  file_ = h5_open_read_serial(path, file_context(path));
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
  return with_h5_context(file_context(path_) + ", dataset '" + dataset + "'", [&] {
    H5Handle space(RA_H5_CHECK(H5Dget_space(open_dataset(dataset))), H5Kind::dataspace);
    return extent(space.get());
  });
}

void H5RowReader::read(const std::string& dataset, std::int64_t b, std::int64_t h,
                       const std::vector<std::pair<std::int64_t, std::int64_t>>& runs,
                       DType mem_type, void* out) {
  H5Quiet quiet;
  with_h5_context(file_context(path_) + ", dataset '" + dataset + "'", [&] {
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
  RA_CHECK(d.size() >= 3, input, file_context(path_), ", dataset '", dataset, "': has shape ",
           shape_text(d), "; expected [B, H, N] or [B, H, N, D]");
  read(dataset, b, h, {{0, d[2]}}, mem_type, out);
}

}  // namespace ringattn
