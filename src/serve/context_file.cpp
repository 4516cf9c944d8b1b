// Contexts from HDF5 files (see context_file.hpp).
#include "serve/context_file.hpp"

#include <hdf5.h>

#include <cstring>
#include <vector>

#include "core/error.hpp"
#include "core/shape.hpp"
#include "io/h5_describe.hpp"
#include "io/h5_handle.hpp"
#include "io/nonfinite.hpp"

namespace ringattn::serve {

void to_json(nlohmann::json& j, const ContextFile& f) {
  j = {{"path", f.path},         {"k", f.k},           {"v", f.v},
       {"batch", f.batch},       {"rank4", f.rank4},   {"dtype", dtype_name(f.dtype)},
       {"heads_kv", f.heads_kv}, {"tokens", f.tokens}, {"head_dim", f.head_dim}};
}

void from_json(const nlohmann::json& j, ContextFile& f) {
  f.path = j.at("path");
  f.k = j.at("k");
  f.v = j.at("v");
  f.batch = j.at("batch");
  f.rank4 = j.at("rank4");
  f.dtype = parse_dtype(j.at("dtype").get<std::string>());
  f.heads_kv = j.at("heads_kv");
  f.tokens = j.at("tokens");
  f.head_dim = j.at("head_dim");
}

std::string first_nonfinite(const void* data, DType t, std::int64_t heads, std::int64_t rows,
                            std::int64_t dim) {
  NonfiniteElement e;
  if (!find_first_nonfinite(data, t, BatchHeadRange{0, 1, 0, heads}, Positions::contiguous(0, rows),
                            dim, e))
    return "";
  const char* what = e.kind == NonfiniteElement::nan ? "NaN" : "Inf";
  return std::string(what) + " at [" + std::to_string(e.index[1]) + ", " +
         std::to_string(e.index[2]) + ", " + std::to_string(e.index[3]) + "]";
}

ContextFile describe_context_file(const std::string& path, const std::string& kn,
                                  const std::string& vn, std::int64_t batch) {
  const std::string ctx = "context file '" + path + "'";
  H5DescribeWhat what;
  what.root_objects = false;
  what.attributes = false;
  what.names = {kn, vn};
  const H5FileDesc d = describe_h5_file(path, what, ctx);
  DType types[2];
  for (int i = 0; i < 2; ++i) {
    const std::string& n = i == 0 ? kn : vn;
    const H5DatasetDesc* ds = d.dataset(n);
    RA_CHECK(ds, input, ctx, ": no dataset '", n, "'");
    RA_CHECK(ds->dims.size() == 4 || ds->dims.size() == 3, input, ctx, ", dataset '", n,
             "': must be [B, H_kv, T, D] or [H_kv, T, D]");
    RA_CHECK(ds->type.ieee_dtype(types[i]), input, ctx, ", dataset '", n,
             "': must be f32 or f16, not ", ds->type.name);
    RA_CHECK(ds->external_files == 0 && ds->layout != "virtual", input, ctx, ", dataset '", n,
             "': external or virtual storage is not served");
    for (const H5FilterDesc& f : ds->filters)
      RA_CHECK(f.decodes, input, ctx, ", dataset '", n, "': a filter this HDF5 cannot decode");
  }
  const H5DatasetDesc &k = *d.dataset(kn), &v = *d.dataset(vn);
  RA_CHECK(k.dims == v.dims && types[0] == types[1], input, ctx, ": '", kn, "' and '", vn,
           "' differ in shape or type");
  ContextFile f;
  f.path = path;
  f.k = kn;
  f.v = vn;
  f.batch = batch;
  f.rank4 = k.dims.size() == 4;
  f.dtype = types[0];
  const std::size_t o = f.rank4 ? 1 : 0;
  RA_CHECK(batch >= 0 && batch < (f.rank4 ? k.dims[0] : 1), usage, "load: batch ", batch,
           " is not in ", ctx);
  f.heads_kv = k.dims[o];
  f.tokens = k.dims[o + 1];
  f.head_dim = k.dims[o + 2];
  RA_CHECK(f.head_dim >= 1 && f.head_dim <= kMaxHeadDim, input, ctx, ": head dim must be 1..",
           kMaxHeadDim);
  RA_CHECK(f.heads_kv >= 1 && f.tokens >= 1, input, ctx, ": no tokens");
  return f;
}

namespace {

// This rank's rows of one dataset, runs of whole pages read as hyperslabs,
// laid out [H_kv][rows][D].
std::vector<unsigned char> read_own_rows(hid_t file, const std::string& name, const ContextFile& f,
                                         const ContextShard& shard) {
  const auto runs = shard.own_runs(0, f.tokens);
  std::int64_t mine = 0;
  for (auto [x, n] : runs) mine += n;
  const std::size_t row = static_cast<std::size_t>(f.head_dim) * dtype_size(f.dtype);
  std::vector<unsigned char> out(static_cast<std::size_t>(f.heads_kv * mine) * row), tmp;
  H5Handle mem_type = h5_float_type(f.dtype);
  H5Handle dset(RA_H5_CHECK(H5Dopen2(file, name.c_str(), H5P_DEFAULT)), H5Kind::dataset);
  H5Handle fspace(RA_H5_CHECK(H5Dget_space(dset.get())), H5Kind::dataspace);
  std::int64_t done = 0;
  for (auto [x, n] : runs) {
    const hsize_t hk = static_cast<hsize_t>(f.heads_kv), hn = static_cast<hsize_t>(n),
                  hd = static_cast<hsize_t>(f.head_dim);
    std::vector<hsize_t> start, count;
    if (f.rank4) start.push_back(static_cast<hsize_t>(f.batch)), count.push_back(1);
    start.insert(start.end(), {0, static_cast<hsize_t>(x), 0});
    count.insert(count.end(), {hk, hn, hd});
    RA_H5_CHECK(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start.data(), nullptr,
                                    count.data(), nullptr));
    const hsize_t mdims[3] = {hk, hn, hd};
    H5Handle mspace(RA_H5_CHECK(H5Screate_simple(3, mdims, nullptr)), H5Kind::dataspace);
    tmp.resize(static_cast<std::size_t>(f.heads_kv * n) * row);
    RA_H5_CHECK(
        H5Dread(dset.get(), mem_type.get(), mspace.get(), fspace.get(), H5P_DEFAULT, tmp.data()));
    for (std::int64_t h = 0; h < f.heads_kv; ++h)
      std::memcpy(out.data() + static_cast<std::size_t>(h * mine + done) * row,
                  tmp.data() + static_cast<std::size_t>(h * n) * row,
                  static_cast<std::size_t>(n) * row);
    done += n;
  }
  const std::string bad = first_nonfinite(out.data(), f.dtype, f.heads_kv, mine, f.head_dim);
  RA_CHECK(bad.empty(), input, "context file '", f.path, "', dataset '", name, "' has ", bad,
           " (token index within this rank's rows)");
  return out;
}

}  // namespace

void read_context_file(ContextStore& store, const std::string& name, const ContextFile& f) {
  ContextShard& shard = store.create(ContextInfo{name, f.dtype, f.heads_kv, f.head_dim, 0});
  try {
    H5Quiet quiet;
    H5Handle file = h5_open_read_serial(f.path, "context file '" + f.path + "'");
    const std::vector<unsigned char> k = read_own_rows(file.get(), f.k, f, shard);
    const std::vector<unsigned char> v = read_own_rows(file.get(), f.v, f, shard);
    shard.append_own_rows(k.data(), v.data(), f.tokens);
  } catch (...) {
    store.drop(name);
    throw;
  }
}

}  // namespace ringattn::serve
