// Launch arithmetic of the CUDA attention kernel (see launch_shape.hpp). No
// CUDA headers: this file is built and tested with or without the toolkit.
#include "cuda/launch_shape.hpp"

#include <cstdint>
#include <limits>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/positions.hpp"
#include "kernel/params.hpp"

namespace ringattn::cuda {

const char* kernel_path_name(KernelPath p) {
  switch (p) {
    case KernelPath::mma_f16:
      return "cuda-mma-f16";
    case KernelPath::mma_bf16:
      return "cuda-mma-bf16";
    case KernelPath::fma_f32:
      return "cuda-fma-f32";
  }
  return "cuda-?";
}

KernelPath choose_path(DType storage, ComputeType compute) {
  return path_of(choose_operands(storage, compute));
}

Operands choose_operands(DType storage, ComputeType compute) {
  if (compute == ComputeType::bf16) {
    switch (storage) {
      case DType::f32:
        return Operands::f32_as_bf16;
      case DType::f16:
        return Operands::f16_as_bf16;
      case DType::bf16:
        return Operands::bf16;
    }
  }
  switch (storage) {
    case DType::f16:
      return Operands::f16;
    case DType::bf16:
      return Operands::bf16;
    case DType::f32:
      return Operands::f32_fma;
  }
  return Operands::f32_fma;
}

KernelPath path_of(Operands o) {
  switch (o) {
    case Operands::f32_fma:
      return KernelPath::fma_f32;
    case Operands::f16:
      return KernelPath::mma_f16;
    default:
      return KernelPath::mma_bf16;
  }
}

DevicePositions encode_positions(const Positions& pos, std::int64_t n) {
  DevicePositions d;
  if (n == 0) return d;
  if (pos.empty()) {
    d.n_segments = 1;
    d.seg[0] = {0, 1, n};
    return d;
  }
  RA_CHECK(pos.size() == n, internal, "positions cover ", pos.size(), " rows, the block has ", n);
  const auto& segs = pos.segments();
  RA_CHECK(segs.size() <= static_cast<std::size_t>(kMaxPositionSegments), usage,
           "the CUDA kernel takes at most ", kMaxPositionSegments,
           " position segments per block, got ", segs.size());
  for (const PositionSegment& s : segs) d.seg[d.n_segments++] = {s.first, s.stride, s.count};
  return d;
}

std::string LaunchShape::name() const {
  return std::string(kernel_path_name(path)) + " d=" + std::to_string(tile.d_tile) +
         " bq=" + std::to_string(tile.block_q) + " bk=" + std::to_string(tile.block_k);
}

bool vector_loads_ok(const AttnParams& p, KernelPath path) {
  if (path == KernelPath::fma_f32) return false;  // the f32 path loads element by element
  // The operand type must be the storage type: no conversion on the way in.
  const bool same_type = (path == KernelPath::mma_f16 && p.dtype == DType::f16) ||
                         (path == KernelPath::mma_bf16 && p.dtype == DType::bf16);
  if (!same_type || p.head_dim % 8 != 0) return false;
  auto aligned = [](const TensorRef& t) {
    // 8 two-byte elements = 16 bytes.
    return reinterpret_cast<std::uintptr_t>(t.data) % 16 == 0 && t.batch_stride % 8 == 0 &&
           t.head_stride % 8 == 0 && t.row_stride % 8 == 0;
  };
  return aligned(p.q) && aligned(p.k) && aligned(p.v);
}

namespace {
std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return (a + b - 1) / b;
}
}  // namespace

LaunchShape plan_launch(const AttnParams& p, const DeviceLimits& dev) {
  RA_CHECK(dev.cc_major >= 8, usage,
           "the CUDA attention kernel needs compute capability 8.0 or "
           "newer (bf16 tensor cores), the device has ",
           dev.cc_major, ".", dev.cc_minor);
  LaunchShape s;
  s.operands = choose_operands(p.dtype, p.compute);
  s.path = path_of(s.operands);
  s.tile = tile_shape(s.path, head_dim_tile(p.head_dim));
  s.q_tiles = ceil_div(p.n_q, s.tile.block_q);
  s.k_tiles = ceil_div(p.n_kv, s.tile.block_k);
  s.blocks = s.q_tiles * p.heads_q * p.batch;
  s.smem = shared_memory_bytes(s.path, s.tile);
  s.vector_loads = vector_loads_ok(p, s.path);
  RA_CHECK(s.smem <= dev.smem_per_block_optin, usage, s.name(), " needs ", s.smem,
           " bytes of shared memory per block, the device allows ", dev.smem_per_block_optin);
  RA_CHECK(s.blocks <= std::numeric_limits<std::int32_t>::max(), usage, "the launch needs ",
           s.blocks, " thread blocks (query tiles x heads x batch), more than a grid holds");
  return s;
}

TileCounts count_tiles(const AttnParams& p, const TileShape& t) {
  TileCounts c;
  const DevicePositions qp = encode_positions(p.q_pos, p.n_q);
  const DevicePositions kp = encode_positions(p.k_pos, p.n_kv);
  const std::int64_t qt_n = ceil_div(p.n_q, t.block_q), kt_n = ceil_div(p.n_kv, t.block_k);
  for (std::int64_t qt = 0; qt < qt_n; ++qt)
    for (std::int64_t kt = 0; kt < kt_n; ++kt) {
      ++c.total;
      switch (tile_kind(qp, kp, p.n_q, p.n_kv, t.block_q, t.block_k, qt, kt, p.causal)) {
        case kTileEmpty:
          ++c.empty;
          break;
        case kTileDiagonal:
          ++c.diagonal;
          break;
        default:
          ++c.full;
      }
    }
  return c;
}

std::string kernel_implementation(const AttnParams& p) {
  LaunchShape s;
  s.path = choose_path(p.dtype, p.compute);
  s.tile = tile_shape(s.path, head_dim_tile(p.head_dim));
  return s.name() + " compute=" + compute_type_name(p.compute);
}

}  // namespace ringattn::cuda
