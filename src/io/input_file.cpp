// The checks over an input's description, rank 0's agreed verdict, the
// collective open and the shard reads of the input file (see
// input_file.hpp).
#include "io/input_file.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "comm/agree.hpp"
#include "core/error.hpp"

namespace ringattn {

// In the type's own namespace, for ADL; input_file.cpp is the one place a
// FileIdentity goes to JSON (InputInfo's broadcast).
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(FileIdentity, path, device, inode, size, mtime_ns)

namespace {

using nlohmann::json;

constexpr int kRoot = 0;
constexpr std::array<const char*, 4> kAxisNames{"B (batch)", "H (heads)", "N (tokens)",
                                                "D (head dim)"};
// The axes of the 4-d tensors and of lse, as the messages spell them.
constexpr const char* kAxes4 = "[B, H, N, D]";
constexpr const char* kAxes3 = "[B, H, N]";
// Root names a "no such dataset" message lists, to help with a misspelling.
constexpr std::size_t kListedRootNames = 8;

// The shape, from q's and k's descriptions (once the checks passed: rank 4,
// k shaped like v, matching batch and head dim).
AttnShape shape_of(const H5DatasetDesc& q, const H5DatasetDesc& k) {
  return {q.dims[0], q.dims[1], k.dims[1], q.dims[2], k.dims[2], q.dims[3]};
}

std::string shape_text(const std::vector<std::int64_t>& dims) {
  std::ostringstream os;
  os << '[';
  for (std::size_t i = 0; i < dims.size(); ++i)
    os << (i ? ", " : "") << static_cast<std::uint64_t>(dims[i]);  // unsigned, as HDF5 keeps them
  os << ']';
  return os.str();
}

// " (the file's root holds: a, b, c)".
std::string root_listing(const std::vector<std::string>& root) {
  if (root.empty()) return " (the file's root is empty)";
  std::string out;
  for (std::size_t i = 0; i < std::min(root.size(), kListedRootNames); ++i)
    out += (i ? ", " : "") + root[i];
  if (root.size() > kListedRootNames) out += ", ...";
  return " (the file's root holds: " + out + ")";
}

// ---- the checks, one dataset at a time --------------------------------------------

// The name leads to a dataset. `why` ("; --do-name ...") tells who asked
// for a dataset that is not there.
void check_object(const H5DatasetDesc& d, const std::vector<std::string>& root,
                  const std::string& ctx, const std::string& why = "") {
  RA_CHECK(d.object != H5Object::missing, input, ctx, ": no such dataset", root_listing(root), why);
  RA_CHECK(d.object != H5Object::dangling, input, ctx, ": no such dataset: the name is a link to '",
           d.link, "', which resolves to nothing", why);
  RA_CHECK(d.object == H5Object::dataset, input, ctx, ": is a ", h5_object_name(d.object),
           ", not a dataset");
}

// rank 4: [B, H, N, D]; rank 3 (lse): [B, H, N].
void check_dims(const H5DatasetDesc& d, const std::string& ctx, std::size_t rank = 4) {
  const char* axes = rank == 4 ? kAxes4 : kAxes3;
  RA_CHECK(d.space == "simple", input, ctx, ": is ",
           d.space == "scalar" ? "a scalar" : "empty (null)", "; expected ", rank, " dimensions ",
           axes);
  RA_CHECK(d.dims.size() == rank, input, ctx, ": has ",
           counted(static_cast<std::int64_t>(d.dims.size()), "dimension"), " ", shape_text(d.dims),
           "; expected ", rank, " ", axes);
  for (std::size_t a = 0; a < rank; ++a) {
    RA_CHECK(d.dims[a] != 0, input, ctx, ": has length 0 along ", kAxisNames[a], " in shape ",
             shape_text(d.dims));
    RA_CHECK(d.dims[a] > 0, input, ctx, ": has length ", static_cast<std::uint64_t>(d.dims[a]),
             " along ", kAxisNames[a], " in shape ", shape_text(d.dims),
             ", beyond a 64-bit signed count");
  }
  if (rank < 4) return;
  RA_CHECK(d.dims[3] <= kMaxHeadDim, input, ctx, ": has head dim D = ", d.dims[3], " in shape ",
           shape_text(d.dims), "; at most ", kMaxHeadDim, " is supported");
}

// IEEE binary32 or binary16, in either byte order.
DType check_type(const H5TypeDesc& t, const std::string& ctx) {
  RA_CHECK(t.cls == "float", input, ctx, ": has ", t.cls, " elements of ", counted(t.bytes, "byte"),
           "; expected IEEE float32 or float16");
  RA_CHECK(t.order == "le" || t.order == "be", input, ctx,
           ": has floats in an unsupported byte order");
  DType dt = DType::f32;
  if (t.ieee_dtype(dt)) return dt;
  RA_CHECK(t.bytes != 8, input, ctx,
           ": has float64 elements; expected float32 or float16 (convert with numpy's astype)");
  RA_FAIL(input, ctx, ": has a ", t.bytes, "-byte float with ", t.exponent_bits, " exponent and ",
          t.mantissa_bits, " mantissa bits; expected IEEE float32 or float16",
          t.bytes == 2 && t.exponent_bits == 8 ? " (bfloat16 is not accepted in files)" : "");
}

// Layout, filters and raw storage this tool reads, on every rank.
void check_storage(const H5DatasetDesc& d, DType dt, const std::string& ctx) {
  // Sizes are int64 from here on (shards, buffers, offsets): the whole
  // dataset's byte count must fit, or later arithmetic would wrap silently.
  // (A chunked dataset can declare such a shape in a file of a few KiB.)
  std::int64_t bytes = static_cast<std::int64_t>(dtype_size(dt));
  bool overflow = false;
  for (const std::int64_t x : d.dims)
    overflow = overflow || __builtin_mul_overflow(bytes, x, &bytes);
  RA_CHECK(!overflow, input, ctx, ": has shape ", shape_text(d.dims), " of ", dtype_name(dt),
           ": its byte count overflows a 64-bit integer (over 8 EiB); not a runnable size");
  RA_CHECK(d.external_files == 0, input, ctx,
           ": keeps its elements in external raw files, which this tool does not read; copy them "
           "into the file (h5repack -l CONTI)");
  RA_CHECK(d.layout != "virtual" && d.layout != "unknown", input, ctx,
           ": has a storage layout this tool cannot read (", d.layout, ")");
  for (const H5FilterDesc& f : d.filters)
    RA_CHECK(f.decodes, input, ctx, ": is compressed with filter '", f.name, "' (id ", f.id,
             "), which this HDF5 library cannot decode; install its plugin (HDF5_PLUGIN_PATH) or "
             "rewrite the file without it");
}

DType check_dataset(const H5FileDesc& f, const std::string& name, const std::string& file_ctx,
                    std::size_t rank = 4, const std::string& why = "") {
  const std::string ctx = file_ctx + ", dataset '" + name + "'";
  const H5DatasetDesc* d = f.object(name);
  RA_CHECK(d != nullptr, internal, ctx, ": not described");
  check_object(*d, f.root, ctx, why);
  check_dims(*d, ctx, rank);
  const DType dt = check_type(d->type, ctx);
  check_storage(*d, dt, ctx);
  return dt;
}

// ---- the checks across q, k and v ---------------------------------------------------

void check_together(const InputInfo& info, const std::string& file_ctx) {
  const H5DatasetDesc &q = info.q, &k = info.k, &v = info.v;
  const std::string shapes = "'" + q.name + "' " + shape_text(q.dims) + ", '" + k.name + "' " +
                             shape_text(k.dims) + ", '" + v.name + "' " + shape_text(v.dims);
  RA_CHECK(q.type.name == k.type.name && k.type.name == v.type.name, input, file_ctx,
           ": datasets '", q.name, "' (", q.type.name, "), '", k.name, "' (", k.type.name,
           ") and '", v.name, "' (", v.type.name, ") must have one element type");
  RA_CHECK(q.dims[0] == k.dims[0] && k.dims[0] == v.dims[0], input, file_ctx,
           ": datasets disagree in batch size B: ", shapes);
  RA_CHECK(q.dims[3] == k.dims[3] && k.dims[3] == v.dims[3], input, file_ctx,
           ": datasets disagree in head dim D: ", shapes);
  RA_CHECK(k.dims[1] == v.dims[1] && k.dims[2] == v.dims[2], input, file_ctx, ": datasets '",
           k.name, "' and '", v.name, "' must agree in heads H and tokens N: ", shapes);
  RA_CHECK(q.dims[1] % k.dims[1] == 0, input, file_ctx, ": dataset '", q.name, "' has ",
           counted(q.dims[1], "head"), ", not a multiple of the ", counted(k.dims[1], "head"),
           " of '", k.name, "' (grouped-query attention needs H_q % H_kv == 0): ", shapes);
}

// ---- the backward's datasets: dO, and a reused forward's o and lse ------------------

// Why each was asked for, for the message when it is missing.
std::string why_read(InputTensor t) {
  if (t == InputTensor::d_o)
    return "; a backward run reads the upstream gradient dO from it (name it with --do-name)";
  return "; --reuse-forward reads 'o' and 'lse' from the input (as a forward run with --lse "
         "wrote them)";
}

// Every named one passes the per-dataset checks with a float type of its
// own and has q's shape ([B, H, N] for lse). Runs after q's checks.
void check_backward(InputInfo& info, const H5FileDesc& f, const InputNames& names,
                    const std::string& file_ctx) {
  const struct {
    InputTensor t;
    const std::string& name;
    H5DatasetDesc& desc;
  } wanted[] = {{InputTensor::d_o, names.d_o, info.d_o},
                {InputTensor::o, names.o, info.o},
                {InputTensor::lse, names.lse, info.lse}};
  for (const auto& w : wanted) {
    if (w.name.empty()) continue;
    const bool is_lse = w.t == InputTensor::lse;
    check_dataset(f, w.name, file_ctx, is_lse ? 3 : 4, why_read(w.t));
    w.desc = *f.object(w.name);
    std::vector<std::int64_t> want = info.q.dims;
    if (is_lse) want.pop_back();
    RA_CHECK(w.desc.dims == want, input, file_ctx, ": dataset '", w.name, "' ",
             shape_text(w.desc.dims), " must be shaped ", is_lse ? "like '" : "exactly like '",
             info.q.name, "'", is_lse ? " without D, " : " ", shape_text(want), " (",
             w.t == InputTensor::d_o ? "the upstream gradient dO is"
             : is_lse                ? "lse is"
                                     : "o is",
             " ", is_lse ? kAxes3 : kAxes4, " over q's tokens)");
  }
}

// The input's identity and that of every other file its datasets live in.
// HDF5 opens such a file with MPI-IO under the name it builds, which
// h5_open_parallel cannot shorten: a name too long for MPI-IO is refused.
void take_identities(InputInfo& info, const std::string& path, const std::string& file_ctx) {
  info.file = file_identity(path);
  for (const H5DatasetDesc* d : {&info.q, &info.k, &info.v, &info.d_o, &info.o, &info.lse}) {
    if (d->object != H5Object::dataset || d->file.empty()) continue;
    const std::string ctx = file_ctx + ", dataset '" + d->name + "'";
    const FileIdentity other = with_h5_context(ctx, [&] { return file_identity(d->file); });
    if (same_file(other, info.file)) continue;
    RA_CHECK(d->file.size() <= kMpioPathLimit, input, ctx, ": its data lives in '", d->file,
             "' (an external link), whose path is ", d->file.size(), " bytes, longer than the ",
             kMpioPathLimit, " the MPI-IO layer takes; move that file to a shorter path");
    bool known = false;
    for (const auto& l : info.linked) known = known || same_file(other, l);
    if (!known) info.linked.push_back(other);
  }
}

// ---- the verdict's broadcast: InputInfo as JSON ---------------------------------------

json info_json(const InputInfo& i) {
  return {{"file", i.file}, {"linked", i.linked}, {"dtype", static_cast<int>(i.dtype)},
          {"q", i.q},       {"k", i.k},           {"v", i.v},
          {"d_o", i.d_o},   {"o", i.o},           {"lse", i.lse},
          {"cu_q", i.cu_q}, {"cu_k", i.cu_k},     {"tokens", i.tokens}};
}

InputInfo info_from(const json& j) {
  InputInfo i;
  j.at("file").get_to(i.file);
  j.at("linked").get_to(i.linked);
  i.dtype = static_cast<DType>(j.at("dtype").get<int>());
  j.at("q").get_to(i.q);
  j.at("k").get_to(i.k);
  j.at("v").get_to(i.v);
  j.at("d_o").get_to(i.d_o);
  j.at("o").get_to(i.o);
  j.at("lse").get_to(i.lse);
  j.at("cu_q").get_to(i.cu_q);
  j.at("cu_k").get_to(i.cu_k);
  j.at("tokens").get_to(i.tokens);
  i.shape = shape_of(i.q, i.k);
  return i;
}

// Rank 0's info to every rank (CBOR: binary-safe for any name).
void broadcast_info(MPI_Comm comm, int rank, InputInfo& info) {
  std::vector<std::uint8_t> bytes;
  if (rank == kRoot) bytes = json::to_cbor(info_json(info));
  long long n = static_cast<long long>(bytes.size());
  RA_MPI_CHECK(MPI_Bcast(&n, 1, MPI_LONG_LONG, kRoot, comm));
  bytes.resize(static_cast<std::size_t>(n));
  RA_MPI_CHECK(MPI_Bcast(bytes.data(), static_cast<int>(n), MPI_BYTE, kRoot, comm));
  if (rank != kRoot) info = info_from(json::from_cbor(bytes));
}

// Filters HDF5 applies to every chunk. Any other (szip, plugins) may leave a
// chunk unfiltered when it cannot shrink it, which HDF5 1.10's collective
// reads do not honour (they decode it anyway and fail).
bool filters_every_chunk(const H5DatasetDesc& d) {
  for (const H5FilterDesc& f : d.filters)
    if (f.id != H5Z_FILTER_DEFLATE && f.id != H5Z_FILTER_SHUFFLE && f.id != H5Z_FILTER_FLETCHER32 &&
        f.id != H5Z_FILTER_NBIT && f.id != H5Z_FILTER_SCALEOFFSET)
      return false;
  return true;
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

// A whole integer dataset as int64, row-major: the packed offsets (read by
// every rank, a few KiB, independently, and checked alike: the same verdict
// everywhere) and the token ids.
std::vector<std::int64_t> read_int64s(hid_t file, const H5DatasetDesc& d, const std::string& ctx) {
  std::int64_t n = 1;
  for (const std::int64_t e : d.dims) n *= e;
  std::vector<std::int64_t> cu(static_cast<std::size_t>(n));
  with_h5_context(ctx, [&] {
    H5Handle dset(RA_H5_CHECK(H5Dopen2(file, d.name.c_str(), H5P_DEFAULT)), H5Kind::dataset);
    RA_H5_CHECK(H5Dread(dset.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, cu.data()));
  });
  return cu;
}

Documents read_documents(hid_t file, const InputInfo& info, const std::string& file_ctx) {
  const std::string q_ctx = file_ctx + ", dataset '" + info.cu_q.name + "'";
  const std::string k_ctx = file_ctx + ", dataset '" + info.cu_k.name + "'";
  std::vector<std::int64_t> cu_q = read_int64s(file, info.cu_q, q_ctx);
  std::vector<std::int64_t> cu_k =
      info.cu_k.name == info.cu_q.name ? cu_q : read_int64s(file, info.cu_k, k_ctx);
  check_cu_seqlens(cu_q, info.shape.tokens_q, q_ctx);
  check_cu_seqlens(cu_k, info.shape.tokens_kv, k_ctx);
  return Documents::packed(std::move(cu_q), std::move(cu_k));
}

}  // namespace

DType InputInfo::dtype_of(InputTensor t) const {
  if (t == InputTensor::q || t == InputTensor::k || t == InputTensor::v) return dtype;
  DType dt = DType::f32;
  if (has(t)) dataset(t).type.ieee_dtype(dt);
  return dt;
}

Documents read_input_documents(const InputInfo& info) {
  if (!info.packed()) return {};
  const std::string ctx = "input file '" + info.file.path + "'";
  H5Quiet quiet;
  const H5Handle file = h5_open_read_serial(info.file.path, ctx);
  return read_documents(file.get(), info, ctx);
}

// Token ids every rank may hold: 2 GiB of int64.
constexpr std::int64_t kMaxTokenIds = std::int64_t{1} << 28;

std::vector<std::int64_t> read_input_tokens(const InputInfo& info) {
  const H5DatasetDesc& d = info.tokens;
  const std::string ctx = "input file '" + info.file.path + "'";
  RA_CHECK(d.object == H5Object::dataset, usage, ctx, ": has no '", kTokens,
           "' dataset (the token ids the converters write)");
  const std::string dctx = ctx + ", dataset '" + d.name + "'";
  const std::int64_t B = info.shape.batch, N = info.shape.tokens_q;
  const std::vector<std::int64_t> want{B, N};
  RA_CHECK(d.space == "simple" && d.dims == want, usage, dctx, ": has shape ",
           d.space == "simple" ? shape_text(d.dims) : d.space,
           "; token ids are [B, N] = ", shape_text(want), " like '", info.q.name, "'");
  RA_CHECK(d.type.cls == "integer" && d.type.bytes <= 8, usage, dctx, ": has element type ",
           d.type.name, "; token ids are integers");
  RA_CHECK(B * N <= kMaxTokenIds, usage, dctx, ": holds ", B * N, " ids, more than the ",
           kMaxTokenIds, " read at once");
  for (const H5FilterDesc& f : d.filters)
    RA_CHECK(f.decodes, input, dctx, ": is compressed with filter '", f.name,
             "', which this HDF5 library cannot decode");
  H5Quiet quiet;
  const H5Handle file = h5_open_read_serial(info.file.path, ctx);
  return read_int64s(file.get(), d, dctx);
}

H5DescribeWhat input_description_request(const InputNames& names) {
  H5DescribeWhat what;
  what.root_objects = false;
  what.attributes = false;
  what.names = {names.q, names.k, names.v, kCuSeqlens, kCuSeqlensQ, kCuSeqlensK, kTokens};
  for (const std::string* n : {&names.d_o, &names.o, &names.lse})
    if (!n->empty()) what.names.push_back(*n);
  return what;
}

constexpr std::int64_t kMaxPackedOffsets = std::int64_t{1} << 27;  // 1 GiB of int64

// The offsets of packed sequences: a 1-D integer dataset (int32 or int64) of
// S + 1 >= 2 entries. Their values are checked when read (check_cu_seqlens).
void check_offsets_desc(const H5DatasetDesc& d, const std::vector<std::string>& root,
                        const std::string& file_ctx) {
  const std::string ctx = file_ctx + ", dataset '" + d.name + "'";
  check_object(d, root, ctx);
  RA_CHECK(d.space == "simple" && d.dims.size() == 1, usage, ctx, ": has shape ",
           d.space == "simple" ? shape_text(d.dims) : d.space, "; packed offsets are 1-D [S + 1]");
  RA_CHECK(d.dims[0] >= 2, usage, ctx, ": has ", counted(d.dims[0], "entry"),
           "; packed offsets need S + 1 >= 2 (0 and the token count)");
  // Every rank holds the offsets: a size a damaged file claims is refused, not allocated.
  RA_CHECK(d.dims[0] <= kMaxPackedOffsets, usage, ctx, ": has ", counted(d.dims[0], "entry"),
           ", more than the ", kMaxPackedOffsets, " packed offsets a run takes");
  RA_CHECK(d.type.cls == "integer" && (d.type.bytes == 4 || d.type.bytes == 8) &&
               d.type.name.rfind("i", 0) == 0,
           usage, ctx, ": has element type ", d.type.name, "; packed offsets are int32 or int64");
  for (const H5FilterDesc& f : d.filters)
    RA_CHECK(f.decodes, input, ctx, ": is compressed with filter '", f.name,
             "', which this HDF5 library cannot decode");
}

// Which offsets a packed input has: `cu_seqlens` (self-attention) or both
// `cu_seqlens_q` and `cu_seqlens_k` (cross), never a mix; batch 1.
void check_packing(InputInfo& info, const H5FileDesc& d, const std::string& file_ctx) {
  const auto present = [&](const char* name) {
    const H5DatasetDesc* o = d.object(name);
    return o != nullptr && o->object != H5Object::missing;
  };
  const bool self = present(kCuSeqlens), q = present(kCuSeqlensQ), k = present(kCuSeqlensK);
  if (!self && !q && !k) return;
  RA_CHECK(!(self && (q || k)), usage, file_ctx, ": has both '", kCuSeqlens, "' and '",
           q ? kCuSeqlensQ : kCuSeqlensK,
           "'; packed self-attention uses cu_seqlens alone, cross-attention cu_seqlens_q and "
           "cu_seqlens_k");
  RA_CHECK(self || (q && k), usage, file_ctx, ": has '", q ? kCuSeqlensQ : kCuSeqlensK,
           "' without '", q ? kCuSeqlensK : kCuSeqlensQ, "'; packed cross-attention needs both");
  if (self)
    RA_CHECK(info.shape.tokens_q == info.shape.tokens_kv, usage, file_ctx, ": '", kCuSeqlens,
             "' packs self-attention, but '", info.q.name, "' has ", info.shape.tokens_q,
             " tokens and '", info.k.name, "' ", info.shape.tokens_kv,
             "; cross-attention needs cu_seqlens_q and cu_seqlens_k");
  RA_CHECK(info.shape.batch == 1, usage, file_ctx, ": packed sequences need batch B = 1 ('",
           info.q.name, "' has B = ", info.shape.batch, "): the sequences lie along N");
  info.cu_q = *d.object(self ? kCuSeqlens : kCuSeqlensQ);
  info.cu_k = *d.object(self ? kCuSeqlens : kCuSeqlensK);
  check_offsets_desc(info.cu_q, d.root, file_ctx);
  if (!self) check_offsets_desc(info.cu_k, d.root, file_ctx);
  RA_CHECK(info.cu_q.dims[0] == info.cu_k.dims[0], usage, file_ctx, ": '", kCuSeqlensQ, "' holds ",
           info.cu_q.dims[0] - 1, " sequences and '", kCuSeqlensK, "' ", info.cu_k.dims[0] - 1,
           "; they must hold the same S");
}

InputInfo check_input(const H5FileDesc& d, const InputNames& names) {
  const std::string file_ctx = "input file '" + d.path + "'";
  InputInfo info;
  const DType tq = check_dataset(d, names.q, file_ctx);
  check_dataset(d, names.k, file_ctx);
  check_dataset(d, names.v, file_ctx);
  info.q = *d.object(names.q);
  info.k = *d.object(names.k);
  info.v = *d.object(names.v);
  check_together(info, file_ctx);
  info.dtype = tq;
  info.shape = shape_of(info.q, info.k);
  check_backward(info, d, names, file_ctx);
  take_identities(info, d.path, file_ctx);
  check_packing(info, d, file_ctx);
  if (const H5DatasetDesc* t = d.object(kTokens)) info.tokens = *t;
  return info;
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
               counted(now.size, "byte"),
               "): the result would mix two inputs, so nothing is committed; "
               "run again on an input that stays put");
    }
  });
}

InputInfo inspect_input(MPI_Comm comm, const std::string& path, const InputNames& names) {
  int rank = 0;
  RA_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  InputInfo info;
  agree(comm, [&] {
    if (rank != kRoot) return;
    const std::string file_ctx = "input file '" + path + "'";
    RA_CHECK(!names.q.empty() && !names.k.empty() && !names.v.empty(), usage, file_ctx,
             ": dataset names must not be empty");
    info = check_input(describe_h5_file(path, input_description_request(names), file_ctx), names);
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

  // The file is valid: now every rank opens it.
  const std::string ctx = "input file '" + path + "'";
  agree(
      comm,
      [&] {
        with_h5_context(ctx, [&] {
          f.file_ = h5_open_parallel(comm, path, H5Open::read, ctx);
          RA_CHECK(static_cast<bool>(f.file_), io, "HDF5 cannot open it with MPI-IO");
          // External links resolve against the input's own directory, also
          // when it was opened through /proc/self/fd (h5_open_parallel).
          H5Handle dapl(RA_H5_CHECK(H5Pcreate(H5P_DATASET_ACCESS)), H5Kind::plist);
          RA_H5_CHECK(H5Pset_elink_prefix(dapl.get(), (directory_of(path) + "/").c_str()));
          for (std::size_t i = 0; i < kInputTensors; ++i) {  // (dapl for the offsets too, below)
            const auto t = static_cast<InputTensor>(i);
            if (!f.info_.has(t)) continue;  // a backward tensor nobody asked for
            const H5DatasetDesc& d = f.info_.dataset(t);
            f.dsets_[i] = H5Handle(RA_H5_CHECK(H5Dopen2(f.file_.get(), d.name.c_str(), dapl.get())),
                                   H5Kind::dataset);
            f.collective_[i] = filters_every_chunk(d);
            f.mem_types_[i] = h5_float_type(f.info_.dtype_of(t));
          }
        });
        if (f.info_.packed()) f.docs_ = read_documents(f.file_.get(), f.info_, ctx);
      },
      StepKind::collective);
  return f;
}

std::size_t InputFile::shard_elements(const Partition& part, const BatchHeadRange& r) const {
  return static_cast<std::size_t>(r.b_count * r.h_count * part.local_size(rank_) *
                                  info_.shape.head_dim);
}

std::size_t InputFile::shard_elements(InputTensor t, const Partition& part,
                                      const BatchHeadRange& r) const {
  return static_cast<std::size_t>(r.b_count * r.h_count * part.local_size(rank_) *
                                  (t == InputTensor::lse ? 1 : info_.shape.head_dim));
}

void InputFile::read_shard(InputTensor t, const Partition& part, const BatchHeadRange& range,
                           DType mem_type, void* out, int rows_of) {
  H5Quiet quiet;
  const std::size_t ti = static_cast<std::size_t>(t);
  const H5DatasetDesc& d = info_.dataset(t);
  static constexpr std::array<const char*, kInputTensors> kNames{"q", "k", "v", "do", "o", "lse"};
  const std::string ctx = "input file '" + info_.file.path + "', dataset '" +
                          (d.name.empty() ? kNames[ti] : d.name) + "'";
  const DType stored = info_.dtype_of(t);
  const std::int64_t row_elements = t == InputTensor::lse ? 1 : info_.shape.head_dim;

  // Arguments first, agreed, so that no rank enters the collective read alone.
  Positions rows;
  std::size_t n = 0;
  agree(comm_, [&] {
    RA_CHECK(static_cast<bool>(file_), usage, ctx, ": read from a closed input file");
    RA_CHECK(static_cast<bool>(dsets_[ti]), usage, ctx,
             ": not opened (InputNames did not name it when the input was opened)");
    RA_CHECK(part.ranks() == size_, usage, ctx, ": partition over ", counted(part.ranks(), "rank"),
             ", but the communicator has ", size_);
    RA_CHECK(part.tokens() == d.dims[2], usage, ctx, ": partition of ",
             counted(part.tokens(), "token"), ", but the dataset has N = ", d.dims[2]);
    RA_CHECK(mem_type == DType::f32 || mem_type == stored, usage, ctx, ": cannot read ",
             dtype_name(stored), " data as ", dtype_name(mem_type), " (f32 or the storage type)");
    RA_CHECK(rows_of < size_, usage, ctx, ": rows of rank ", rows_of, " of ", size_);
    rows = part.positions(rows_of >= 0 ? rows_of : rank_);
    check_shard(ctx, d.dims[0], d.dims[1], d.dims[2], rows, range);
    n = static_cast<std::size_t>(range.b_count * range.h_count * rows.size() * row_elements);
    RA_CHECK(out != nullptr || n == 0, usage, ctx, ": no output buffer for ",
             counted(static_cast<std::int64_t>(n), "element"));
  });

  agree(
      comm_,
      [&] {
        with_h5_context(ctx, [&] {
          last_io_ = transfer_shard(comm_, Transfer::read, dsets_[ti].get(), mem_types_[ti].get(),
                                    rows, range, out, collective_[ti]);
        });
      },
      StepKind::collective);
  if (mem_type == DType::f32 && stored == DType::f16) widen_f16_in_place(out, n);
}

void InputFile::close() {
  if (!file_) return;
  H5Quiet quiet;
  agree(
      comm_,
      [&] {
        with_h5_context("input file '" + info_.file.path + "'", [&] {
          for (auto& d : dsets_) d.close();
          for (auto& m : mem_types_) m.close();
          file_.close();
        });
      },
      StepKind::collective);
}

}  // namespace ringattn
