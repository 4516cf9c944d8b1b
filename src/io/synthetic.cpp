// The seeded synthetic input, written plane by plane under a temporary name
// and renamed into place (see synthetic.hpp).
#include "io/synthetic.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <span>
#include <sstream>
#include <vector>

#include "core/checked.hpp"
#include "core/documents.hpp"
#include "core/error.hpp"
#include "core/host_memory.hpp"
#include "core/message_text.hpp"
#include "core/seeded_data.hpp"
#include "core/version.hpp"
#include "io/file_identity.hpp"
#include "io/h5_handle.hpp"
#include "io/input_file.hpp"

namespace ringattn {

namespace {

// Sizes that cannot be written, said up front instead of as std::bad_alloc
// or a full disk hours in: the byte counts (checked: a 2^61-token request
// would wrap), one (batch, head) plane in memory (written one at a time),
// and the whole file on its filesystem.
void check_fits(const SyntheticSpec& s, const std::string& ctx) {
  Checked c;
  const std::int64_t es = static_cast<std::int64_t>(dtype_size(s.dtype));
  const std::int64_t plane = std::max(c.mul({s.shape.tokens_q, s.shape.head_dim, es}),
                                      c.mul({s.shape.tokens_kv, s.shape.head_dim, es}));
  const std::int64_t total =
      c.add({c.mul({s.with_do ? 2 : 1, s.shape.batch, s.shape.heads_q, s.shape.tokens_q,
                    s.shape.head_dim, es}),
             c.mul({2, s.shape.batch, s.shape.heads_kv, s.shape.tokens_kv, s.shape.head_dim, es})});
  RA_CHECK(!c.overflow, usage, ctx, ": too big: q [", s.shape.batch, ", ", s.shape.heads_q, ", ",
           s.shape.tokens_q, ", ", s.shape.head_dim, "] and k, v [", s.shape.batch, ", ",
           s.shape.heads_kv, ", ", s.shape.tokens_kv, ", ", s.shape.head_dim,
           "] overflow a 64-bit byte count (over 8 EiB)");
  const std::int64_t memory = available_memory_bytes();
  RA_CHECK(memory < 0 || plane <= memory, usage, ctx, ": too big: one (batch, head) plane is ",
           binary_bytes(static_cast<double>(plane)), " and this process may allocate ",
           binary_bytes(static_cast<double>(memory)), "; gen writes one plane at a time");
  struct statvfs fs {};
  if (::statvfs(directory_of(s.path).c_str(), &fs) != 0) return;
  const double free = static_cast<double>(fs.f_bavail) * static_cast<double>(fs.f_frsize);
  RA_CHECK(static_cast<double>(total) <= free, usage, ctx, ": too big: it needs ",
           binary_bytes(static_cast<double>(total)), " and '", directory_of(s.path), "' has ",
           binary_bytes(free), " free");
}

// Everything about the target that can be checked before writing, and the
// temporary name beside it (same directory: the rename stays atomic).
std::string check_target(const SyntheticSpec& s, const std::string& ctx) {
  RA_CHECK(!s.path.empty(), usage, "synthetic input: no output path given");
  RA_CHECK(s.shape.batch > 0 && s.shape.heads_q > 0 && s.shape.heads_kv > 0 &&
               s.shape.tokens_q > 0 && s.shape.tokens_kv > 0 && s.shape.head_dim > 0,
           usage, ctx, ": sizes must be positive, got B ", s.shape.batch, ", H ", s.shape.heads_q,
           ", HK ", s.shape.heads_kv, ", N ", s.shape.tokens_q, ", NK ", s.shape.tokens_kv, ", D ",
           s.shape.head_dim);
  RA_CHECK(s.shape.heads_q % s.shape.heads_kv == 0, usage, ctx, ": query heads (", s.shape.heads_q,
           ") must be a multiple of key/value heads (", s.shape.heads_kv, ")");
  RA_CHECK(s.dtype == DType::f32 || s.dtype == DType::f16, usage, ctx,
           ": element type must be f32 or f16, not ", dtype_name(s.dtype));
  RA_CHECK(std::isfinite(s.amplitude) && s.amplitude > 0, usage, ctx,
           ": amplitude must be positive and finite, got ", s.amplitude);
  RA_CHECK(s.gzip >= 0 && s.gzip <= 9, usage, ctx, ": gzip level must be 0..9, got ", s.gzip);
  check_fits(s, ctx);
  return check_new_file_target(s.path, s.overwrite, "", ctx);
}

void write_attribute(hid_t loc, const char* name, const std::string& text) {
  H5Handle type(RA_H5_CHECK(H5Tcopy(H5T_C_S1)), H5Kind::datatype);
  RA_H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE));
  RA_H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8));  // h5py reads it back as str
  H5Handle space(RA_H5_CHECK(H5Screate(H5S_SCALAR)), H5Kind::dataspace);
  H5Handle attr(
      RA_H5_CHECK(H5Acreate2(loc, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT)),
      H5Kind::attribute);
  const char* c = text.c_str();
  RA_H5_CHECK(H5Awrite(attr.get(), type.get(), &c));
  attr.close();
}

template <class T>
void write_attribute(hid_t loc, const char* name, hid_t file_type, hid_t mem_type, T value) {
  H5Handle space(RA_H5_CHECK(H5Screate(H5S_SCALAR)), H5Kind::dataspace);
  H5Handle attr(
      RA_H5_CHECK(H5Acreate2(loc, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT)),
      H5Kind::attribute);
  RA_H5_CHECK(H5Awrite(attr.get(), mem_type, &value));
  attr.close();
}

// One tensor of the file: its name, seed and [B, heads, n, D] shape.
struct Tensor {
  const char* name;
  std::uint64_t seed;
  std::int64_t heads, n;
};

void write_tensor(hid_t file, const SyntheticSpec& s, const Tensor& t, hid_t type,
                  std::vector<char>& plane) {
  const hsize_t dims[4] = {hsize_t(s.shape.batch), hsize_t(t.heads), hsize_t(t.n),
                           hsize_t(s.shape.head_dim)};
  H5Handle space(RA_H5_CHECK(H5Screate_simple(4, dims, nullptr)), H5Kind::dataspace);
  H5Handle dcpl(RA_H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)), H5Kind::plist);
  // Every element is written once: no fill pass.
  RA_H5_CHECK(H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER));
  if (s.chunked || s.gzip > 0) {
    const hsize_t chunk[4] = {1, 1, hsize_t(synthetic_chunk_tokens(t.n)),
                              hsize_t(s.shape.head_dim)};
    RA_H5_CHECK(H5Pset_chunk(dcpl.get(), 4, chunk));
    if (s.gzip > 0) RA_H5_CHECK(H5Pset_deflate(dcpl.get(), static_cast<unsigned>(s.gzip)));
  }
  H5Handle dset(RA_H5_CHECK(H5Dcreate2(file, t.name, type, space.get(), H5P_DEFAULT, dcpl.get(),
                                       H5P_DEFAULT)),
                H5Kind::dataset);

  // One (b, h) plane at a time: (n, D) elements, flattened index first + i.
  const std::size_t n = static_cast<std::size_t>(t.n * s.shape.head_dim);
  plane.resize(n * dtype_size(s.dtype));
  const hsize_t count[4] = {1, 1, hsize_t(t.n), hsize_t(s.shape.head_dim)};
  H5Handle mem(RA_H5_CHECK(H5Screate_simple(4, count, nullptr)), H5Kind::dataspace);
  for (std::int64_t b = 0; b < s.shape.batch; ++b)
    for (std::int64_t h = 0; h < t.heads; ++h) {
      const std::uint64_t first =
          static_cast<std::uint64_t>(((b * t.heads + h) * t.n) * s.shape.head_dim);
      fill_seeded(plane.data(), s.dtype, n, t.seed, first, s.amplitude);
      const hsize_t start[4] = {hsize_t(b), hsize_t(h), 0, 0};
      RA_H5_CHECK(H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr));
      RA_H5_CHECK(H5Dwrite(dset.get(), type, mem.get(), space.get(), H5P_DEFAULT, plane.data()));
    }
  dset.close();
}

// A 1-D int64 dataset of packed offsets.
void write_offsets(hid_t file, const char* name, const std::vector<std::int64_t>& cu) {
  const hsize_t n = cu.size();
  H5Handle space(RA_H5_CHECK(H5Screate_simple(1, &n, nullptr)), H5Kind::dataspace);
  H5Handle dset(RA_H5_CHECK(H5Dcreate2(file, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT,
                                       H5P_DEFAULT, H5P_DEFAULT)),
                H5Kind::dataset);
  RA_H5_CHECK(H5Dwrite(dset.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, cu.data()));
}

}  // namespace

std::int64_t write_synthetic_input(const SyntheticSpec& s) {
  H5Quiet quiet;
  const std::string ctx = "synthetic input '" + s.path + "'";
  // The offsets first: a bad spec leaves nothing behind.
  std::vector<std::int64_t> cu_q, cu_k;
  if (!s.docs.empty()) {
    RA_CHECK(s.shape.batch == 1, usage, ctx, ": packed sequences (--docs) need batch 1, not ",
             s.shape.batch);
    RA_CHECK(s.shape.tokens_q == s.shape.tokens_kv || s.docs.rfind("longtail:", 0) == 0, usage, ctx,
             ": --docs lengths list the query tokens; cross-attention (N != NK) takes "
             "longtail:S");
    cu_q = packed_offsets(s.docs, s.shape.tokens_q, ctx + ", --docs");
    cu_k = packed_offsets(s.docs, s.shape.tokens_kv, ctx + ", --docs");
  }
  const std::string temp = check_target(s, ctx);
  if (s.gzip > 0)
    RA_CHECK(H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0, usage, ctx,
             ": this HDF5 library has no deflate (gzip) filter");

  // Until the rename, a failure removes the temporary file.
  struct TempGuard {
    const std::string& path;
    bool armed = true;
    ~TempGuard() {
      if (armed) ::unlink(path.c_str());
    }
  } guard{temp};

  with_h5_context(ctx + " (temporary '" + temp + "')", [&] {
    H5Handle fapl(RA_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)), H5Kind::plist);
    RA_H5_CHECK(H5Pset_fapl_sec2(fapl.get()));
    H5Handle file(RA_H5_CHECK(H5Fcreate(temp.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, fapl.get())),
                  H5Kind::file);
    H5Handle type = h5_float_type(s.dtype);  // the same in memory and in the file
    std::vector<char> plane;
    const Tensor tensors[4] = {{"q", s.seed, s.shape.heads_q, s.shape.tokens_q},
                               {"k", s.seed + 1, s.shape.heads_kv, s.shape.tokens_kv},
                               {"v", s.seed + 2, s.shape.heads_kv, s.shape.tokens_kv},
                               {kDoDataset, s.seed + 3, s.shape.heads_q, s.shape.tokens_q}};
    for (const Tensor& t : std::span(tensors, s.with_do ? 4 : 3))
      write_tensor(file.get(), s, t, type.get(), plane);
    if (!cu_q.empty()) {
      const bool self = s.shape.tokens_q == s.shape.tokens_kv;
      write_offsets(file.get(), self ? kCuSeqlens : kCuSeqlensQ, cu_q);
      if (!self) write_offsets(file.get(), kCuSeqlensK, cu_k);
    }

    write_attribute(file.get(), "generator", s.generator);
    write_attribute(file.get(), "ringattn_version", std::string(kVersion));
    // Seeds are stored as int64 (h5py and JSON readers have no uint64 trouble
    // then); a seed above 2^63 - 1 reads back negative, with the same bits.
    write_attribute(file.get(), "seed", H5T_STD_I64LE, H5T_NATIVE_INT64,
                    static_cast<std::int64_t>(s.seed));
    write_attribute(file.get(), "amplitude", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE,
                    static_cast<double>(s.amplitude));
    write_attribute(file.get(), "seed_rule",
                    std::string("element i of the flattened [B, H, N, D] tensor = amplitude * "
                                "seeded_uniform(s, i) rounded to the dataset's type, with s = "
                                "seed for q, seed + 1 for k, seed + 2 for v, seed + 3 for do"));
    type.close();
    file.close();  // flushes
  });
  rename_into_place(temp, s.path, s.overwrite, "synthetic input");
  guard.armed = false;

  struct stat st {};
  return ::stat(s.path.c_str(), &st) == 0 ? static_cast<std::int64_t>(st.st_size) : 0;
}

}  // namespace ringattn
