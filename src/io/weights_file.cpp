// Writing the attention weights file (see weights_file.hpp).
#include "io/weights_file.hpp"

#include <unistd.h>

#include <array>

#include "core/error.hpp"
#include "io/file_identity.hpp"

namespace ringattn {
namespace {

H5Handle create_dataset(hid_t file, const char* name, hid_t type,
                        const std::vector<hsize_t>& dims) {
  H5Handle space(RA_H5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)),
                 H5Kind::dataspace);
  return H5Handle(
      RA_H5_CHECK(H5Dcreate2(file, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)),
      H5Kind::dataset);
}

// v whole as int64, shaped dims (default: 1-D).
void write_index(hid_t file, const char* name, const std::vector<std::int64_t>& v,
                 std::vector<hsize_t> dims = {}) {
  if (dims.empty()) dims = {hsize_t(v.size())};
  const H5Handle d = create_dataset(file, name, H5T_STD_I64LE, dims);
  if (!v.empty())
    RA_H5_CHECK(H5Dwrite(d.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()));
}

}  // namespace

WeightsFile::WeightsFile(const WeightsFileSpec& spec)
    : spec_(spec), ctx_("weights file '" + spec.path + "'") {
  H5Quiet quiet;
  temp_ = check_new_file_target(spec.path, spec.overwrite, "", ctx_);
  with_h5_context(ctx_, [&] {
    H5Handle fapl(RA_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)), H5Kind::plist);
    RA_H5_CHECK(H5Pset_fapl_sec2(fapl.get()));
    file_ = H5Handle(RA_H5_CHECK(H5Fcreate(temp_.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, fapl.get())),
                     H5Kind::file);
    const hsize_t B = hsize_t(spec.batch), H = hsize_t(spec.heads.size()),
                  R = hsize_t(spec.rows.size());
    write_index(file_.get(), "rows", spec.rows);
    write_index(file_.get(), "heads", spec.heads);
    if (!spec.row_tokens.empty()) write_index(file_.get(), "row_tokens", spec.row_tokens, {B, R});
    lse_ = create_dataset(file_.get(), "lse", H5T_IEEE_F64LE, {B, H, R});
    if (spec.top_k > 0) {
      const hsize_t K = hsize_t(spec.top_k);
      keys_ = create_dataset(file_.get(), "top_keys", H5T_STD_I64LE, {B, H, R, K});
      weights_ = create_dataset(file_.get(), "top_weights", H5T_IEEE_F32LE, {B, H, R, K});
    } else {
      weights_ =
          create_dataset(file_.get(), "weights", H5T_IEEE_F32LE, {B, H, R, hsize_t(spec.keys)});
    }
    for (const auto& [name, value] : spec.attributes)
      write_root_attribute(file_.get(), name, value);
  });
}

WeightsFile::~WeightsFile() {
  if (committed_) return;
  weights_.close();
  keys_.close();
  lse_.close();
  file_.close();
  if (!temp_.empty()) ::unlink(temp_.c_str());
}

void WeightsFile::write(hid_t dset, std::int64_t b, std::int64_t j, std::int64_t width,
                        hid_t mem_type, const void* data) {
  H5Handle space(RA_H5_CHECK(H5Dget_space(dset)), H5Kind::dataspace);
  const int rank = RA_H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  const std::array<hsize_t, 4> start{hsize_t(b), hsize_t(j), 0, 0};
  const std::array<hsize_t, 4> count{1, 1, hsize_t(spec_.rows.size()), hsize_t(width)};
  RA_H5_CHECK(H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(),
                                  nullptr));
  const hsize_t n = count[2] * (rank == 4 ? count[3] : 1);
  H5Handle mem(RA_H5_CHECK(H5Screate_simple(1, &n, nullptr)), H5Kind::dataspace);
  if (n > 0) RA_H5_CHECK(H5Dwrite(dset, mem_type, mem.get(), space.get(), H5P_DEFAULT, data));
}

void WeightsFile::write_plane(std::int64_t b, std::int64_t j, const float* weights,
                              const std::int64_t* keys, const double* lse) {
  H5Quiet quiet;
  with_h5_context(ctx_, [&] {
    const std::int64_t width = spec_.top_k > 0 ? spec_.top_k : spec_.keys;
    write(weights_.get(), b, j, width, H5T_NATIVE_FLOAT, weights);
    if (spec_.top_k > 0) write(keys_.get(), b, j, width, H5T_NATIVE_INT64, keys);
    write(lse_.get(), b, j, 1, H5T_NATIVE_DOUBLE, lse);
  });
}

void WeightsFile::commit() {
  H5Quiet quiet;
  with_h5_context(ctx_, [&] {
    weights_.close();
    keys_.close();
    lse_.close();
    RA_H5_CHECK(H5Fflush(file_.get(), H5F_SCOPE_GLOBAL));
    file_.close();
  });
  rename_into_place(temp_, spec_.path, spec_.overwrite, "weights file");
  committed_ = true;
}

}  // namespace ringattn
