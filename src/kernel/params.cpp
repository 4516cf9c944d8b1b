// AttnParams helpers: dense strides, the default scale, validation.
#include "kernel/params.hpp"

#include <cmath>
#include <cstring>

#include "core/cpu.hpp"
#include "core/error.hpp"
#include "kernel/softmax_tile.hpp"

namespace ringattn {

const char* compute_type_name(ComputeType c) {
  return c == ComputeType::f32 ? "f32" : "bf16";
}

ComputeType parse_compute_type(const char* s) {
  if (std::strcmp(s, "f32") == 0) return ComputeType::f32;
  if (std::strcmp(s, "bf16") == 0) return ComputeType::bf16;
  RA_CHECK(false, usage, "unknown compute type '", s, "' (expected f32 or bf16)");
}

const char* tile_shape_name(TileShape t) {
  switch (t) {
    case TileShape::native:
      return "native";
    case TileShape::avx2:
      return "avx2";
    case TileShape::avx512:
      return "avx512";
  }
  return "?";
}

const char* vector_isa_name(VectorIsa isa) {
  switch (isa) {
    case VectorIsa::native:
      return "native";
    case VectorIsa::avx512:
      return "avx512";
    case VectorIsa::avx2:
      return "avx2";
    case VectorIsa::generic:
      return "generic";
  }
  return "?";
}

const char* bf16_products_name(Bf16Products b) {
  switch (b) {
    case Bf16Products::native:
      return "native";
    case Bf16Products::amx:
      return "amx";
    case Bf16Products::dot:
      return "dot";
    case Bf16Products::fp32:
      return "fp32";
  }
  return "?";
}

Bf16Products resolve_bf16_products(Bf16Products b) {
  if (b != Bf16Products::native) return b;
  const CpuFeatures& c = cpu_features();
  return c.amx_bf16 ? Bf16Products::amx : c.avx512_bf16 ? Bf16Products::dot : Bf16Products::fp32;
}

std::string bf16_products_missing(Bf16Products b) {
  const CpuFeatures& c = cpu_features();
  switch (resolve_bf16_products(b)) {
    case Bf16Products::amx:
      // The AMX path falls back on the dot path's kernels for odd shapes.
      if (!c.amx_bf16 || !c.avx512_bf16)
        return "this CPU has no AMX-BF16 (or the kernel refused its tile state)";
      return "";
    case Bf16Products::dot:
      return c.avx512_bf16 ? "" : "this CPU has no AVX512_BF16";
    default:
      return "";
  }
}

AttnParams AttnParams::dense(const void* q, const void* k, const void* v, DType dtype,
                             std::int64_t batch, std::int64_t heads_q, std::int64_t heads_kv,
                             std::int64_t n_q, std::int64_t n_kv, std::int64_t head_dim) {
  AttnParams p;
  p.q = {q, heads_q * n_q * head_dim, n_q * head_dim, head_dim};
  p.k = {k, heads_kv * n_kv * head_dim, n_kv * head_dim, head_dim};
  p.v = {v, heads_kv * n_kv * head_dim, n_kv * head_dim, head_dim};
  p.dtype = dtype;
  p.batch = batch;
  p.heads_q = heads_q;
  p.heads_kv = heads_kv;
  p.n_q = n_q;
  p.n_kv = n_kv;
  p.head_dim = head_dim;
  return p;
}

float AttnParams::effective_scale() const {
  return scale != 0.0f ? scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
}

void AttnParams::validate() const {
  RA_CHECK(batch >= 1, usage, "batch must be >= 1, got ", batch);
  RA_CHECK(heads_q >= 1 && heads_kv >= 1, usage, "head counts must be >= 1, got q ", heads_q,
           ", kv ", heads_kv);
  RA_CHECK(heads_q % heads_kv == 0, usage, "query heads (", heads_q,
           ") must be a multiple of key/value heads (", heads_kv, ")");
  RA_CHECK(n_q >= 0 && n_kv >= 0, usage, "negative length: n_q ", n_q, ", n_kv ", n_kv);
  RA_CHECK(head_dim >= 1 && head_dim <= kMaxHeadDim, usage, "head dim ", head_dim,
           " outside the kernel's range 1..", kMaxHeadDim);
  RA_CHECK(std::isfinite(scale), usage, "softmax scale must be finite");
  RA_CHECK(threads >= 1, usage, "threads must be >= 1, got ", threads);
  RA_CHECK(cpu_runs(cpu.isa), usage, "this CPU cannot run the kernel's ", vector_isa_name(cpu.isa),
           " path (widest here: ", vector_isa_name(resolve_isa(VectorIsa::native)), ")");
  const std::string no_bf16 = bf16_products_missing(cpu.bf16);
  RA_CHECK(no_bf16.empty(), usage, no_bf16, " for the kernel's ", bf16_products_name(cpu.bf16),
           " bf16 products");
  RA_CHECK(q_pos.empty() || q_pos.size() == n_q, usage, "query positions cover ", q_pos.size(),
           " rows, the block has ", n_q);
  RA_CHECK(k_pos.empty() || k_pos.size() == n_kv, usage, "key positions cover ", k_pos.size(),
           " rows, the block has ", n_kv);
  if (n_q > 0) RA_CHECK(q.data != nullptr, usage, "query pointer is null");
  if (n_kv > 0)
    RA_CHECK(k.data != nullptr && v.data != nullptr, usage, "key/value pointer is null");
}

}  // namespace ringattn
