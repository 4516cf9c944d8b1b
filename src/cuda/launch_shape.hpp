// The arithmetic of a CUDA attention launch, in plain C++ so that it is
// tested on machines without a GPU: which kernel path serves a problem, its
// tile sizes, grid and shared memory, how many query and key tiles there are,
// which (query tile, key tile) pairs a causal launch skips, and the fixed-size
// encoding of Positions that the kernel receives by value.
//
// The inline functions marked RA_HD are compiled for the device too (the
// kernels include this header): the kernel skips tiles by the very rule the
// tests check here.
//
//   (declared only) AttnParams, ComputeType, DType, Positions: the problem
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

// Declared, not included: the CUDA translation units include this header and
// nvcc compiles them as C++17, which kernel/params.hpp (C++20) is not.
namespace ringattn {
enum class DType;
enum class ComputeType;
struct AttnParams;
class Positions;
}  // namespace ringattn

#if defined(__CUDACC__)
#define RA_HD __host__ __device__ __forceinline__
#else
#define RA_HD inline
#endif

namespace ringattn::cuda {

// ---- kernel paths and tiles ------------------------------------------------------

// How the tile products are computed.
enum class KernelPath {
  mma_f16,   // tensor cores (mma.sync m16n8k16), f16 operands, fp32 accumulation
  mma_bf16,  // tensor cores, bf16 operands (bf16 storage, or compute = bf16), fp32 accumulation
  fma_f32,   // plain fp32 FMA on CUDA cores (f32 storage, compute = f32)
};
const char* kernel_path_name(KernelPath p);

// Operand types of one compiled kernel: storage type in, operand type used.
enum class Operands {
  f32_fma,      // f32 storage, fp32 FMA
  f16,          // f16 storage, f16 mma
  bf16,         // bf16 storage, bf16 mma
  f16_as_bf16,  // f16 storage rounded to bf16 on load (compute = bf16)
  f32_as_bf16,  // f32 storage rounded to bf16 on load (compute = bf16)
};
Operands choose_operands(DType storage, ComputeType compute);
KernelPath path_of(Operands o);

// f16 storage -> mma_f16; bf16 storage -> mma_bf16; any storage with
// compute = bf16 -> mma_bf16 (inputs rounded to bf16 on load); f32 storage
// with compute = f32 -> fma_f32 (TF32 would round the inputs to 10 bits).
KernelPath choose_path(DType storage, ComputeType compute);

// The compiled head-dim tiles: 64 and 128 exactly, 256 for everything else
// that does not fit those (a head dim below the tile is zero-padded in
// shared memory, and the kernel skips the padded 16-column steps it can).
constexpr int kHeadDimTiles[] = {64, 128, 256};
constexpr int head_dim_tile(std::int64_t head_dim) {
  return head_dim <= 64 ? 64 : head_dim <= 128 ? 128 : 256;
}

// One compile-time place for the tile sizes of every instantiation; the
// kernel traits static_assert against this table.
struct TileShape {
  int d_tile = 0;   // head dim the kernel is compiled for (>= the problem's)
  int block_q = 0;  // query rows per thread block
  int block_k = 0;  // keys per step
  int warps = 0;    // warps per thread block
  constexpr int threads() const { return 32 * warps; }
};

constexpr TileShape tile_shape(KernelPath path, int d_tile) {
  if (path == KernelPath::fma_f32) {
    // 128 threads; BQ rows share each K/V tile. At d 256 the f32 tiles would
    // exceed the 99 KiB an sm_86/sm_89 block may have, so BQ halves.
    return d_tile <= 128 ? TileShape{d_tile, 32, 32, 4} : TileShape{d_tile, 16, 32, 4};
  }
  // Tensor cores: each warp owns 16 query rows (one m16 slice); K/V tiles of
  // BK keys are shared by the 4 warps.
  return d_tile <= 128 ? TileShape{d_tile, 64, 64, 4} : TileShape{d_tile, 64, 32, 4};
}

// Shared memory of one thread block, in bytes (the layout the kernels use).
constexpr std::size_t shared_memory_bytes(KernelPath path, TileShape t) {
  const std::size_t bq = static_cast<std::size_t>(t.block_q);
  const std::size_t bk = static_cast<std::size_t>(t.block_k);
  const std::size_t d = static_cast<std::size_t>(t.d_tile);
  if (path == KernelPath::fma_f32) {
    // Q (BQ, D+1), K (BK, D+1), V (BK, D), S (BQ, BK+1) f32; positions of the
    // tile's rows and keys (int64); per row m2, l, alpha (f32).
    return 4 * (bq * (d + 1) + bk * (d + 1) + bk * d + bq * (bk + 1)) + 8 * (bq + bk) + 4 * 3 * bq;
  }
  // Q (BQ, D+8), K (BK, D+8), V (BK, D+8) 16-bit, rows padded by 16 bytes so
  // that ldmatrix's eight row addresses fall in distinct banks; key positions (int64).
  return 2 * (bq + 2 * bk) * (d + 8) + 8 * bk;
}

// ---- positions on the device -------------------------------------------------------

// Segments a launch can carry: contiguous is 1, zigzag 2, striped 1.
constexpr int kMaxPositionSegments = 8;

struct DeviceSegment {
  std::int64_t first = 0, stride = 1, count = 0;
};

// Positions by value (a kernel parameter). Always at least one segment for a
// non-empty block: empty Positions encode as {0, 1, n}.
struct DevicePositions {
  int n_segments = 0;
  DeviceSegment seg[kMaxPositionSegments];
};

// Throws Error(usage) when pos has more than kMaxPositionSegments segments, or
// internal when it does not cover n rows.
DevicePositions encode_positions(const Positions& pos, std::int64_t n);

// Position of row i (0 <= i < the rows encoded).
RA_HD std::int64_t position_of(const DevicePositions& p, std::int64_t i) {
  for (int s = 0; s < p.n_segments; ++s) {
    if (i < p.seg[s].count) return p.seg[s].first + i * p.seg[s].stride;
    i -= p.seg[s].count;
  }
  // Past the end (padding rows): continue the last segment.
  if (p.n_segments == 0) return i;
  const DeviceSegment& last = p.seg[p.n_segments - 1];
  return last.first + (last.count + i) * last.stride;
}

struct PositionRange {
  std::int64_t min, max;
};

// Smallest and largest position of rows [begin, begin + n), n >= 1: within a
// segment positions increase, so each overlapped segment contributes its
// first and last overlapped row.
RA_HD PositionRange position_range(const DevicePositions& p, std::int64_t begin, std::int64_t n) {
  PositionRange r{0, 0};
  bool any = false;
  std::int64_t base = 0;
  const std::int64_t end = begin + n;
  for (int s = 0; s < p.n_segments; ++s) {
    const DeviceSegment g = p.seg[s];
    const std::int64_t lo = begin > base ? begin : base;
    const std::int64_t hi = end < base + g.count ? end : base + g.count;
    if (lo < hi) {
      const std::int64_t a = g.first + (lo - base) * g.stride;
      const std::int64_t b = g.first + (hi - 1 - base) * g.stride;
      if (!any || a < r.min) r.min = a;
      if (!any || b > r.max) r.max = b;
      any = true;
    }
    base += g.count;
  }
  return r;
}

// ---- tiles a causal launch skips ------------------------------------------------------

// The rule of kernel/tile_classify.hpp, usable on the device: 0 empty
// (skipped, state untouched), 1 diagonal (masked element by element), 2 full.
enum DeviceTileKind : int { kTileEmpty = 0, kTileDiagonal = 1, kTileFull = 2 };

RA_HD int classify_device_tile(PositionRange q, PositionRange k, bool causal) {
  if (!causal) return kTileFull;
  if (k.min > q.max) return kTileEmpty;
  if (k.max <= q.min) return kTileFull;
  return kTileDiagonal;
}

// Kind of the pair (query tile qt, key tile kt) of a launch.
RA_HD int tile_kind(const DevicePositions& qpos, const DevicePositions& kpos, std::int64_t n_q,
                    std::int64_t n_kv, int block_q, int block_k, std::int64_t qt, std::int64_t kt,
                    bool causal) {
  const std::int64_t q0 = qt * block_q, k0 = kt * block_k;
  const std::int64_t qn = n_q - q0 < block_q ? n_q - q0 : block_q;
  const std::int64_t kn = n_kv - k0 < block_k ? n_kv - k0 : block_k;
  if (!causal) return kTileFull;
  return classify_device_tile(position_range(qpos, q0, qn), position_range(kpos, k0, kn), causal);
}

// ---- one launch ------------------------------------------------------------------------

// The device a launch is planned for (cudaDeviceProp's fields).
struct DeviceLimits {
  int cc_major = 8, cc_minor = 0;
  std::size_t smem_per_block_optin = 163 * 1024;  // sharedMemPerBlockOptin
};

struct LaunchShape {
  KernelPath path = KernelPath::fma_f32;
  Operands operands = Operands::f32_fma;
  TileShape tile;
  std::int64_t q_tiles = 0;   // ceil(n_q / block_q)
  std::int64_t k_tiles = 0;   // ceil(n_kv / block_k)
  std::int64_t blocks = 0;    // q_tiles · heads_q · batch (grid.x; 0: nothing to launch)
  std::size_t smem = 0;       // dynamic shared memory per block, bytes
  bool vector_loads = false;  // 16-byte cp.async loads (see vector_loads_ok)
  std::string name() const;   // e.g. "cuda-mma-f16 d=128 bq=64 bk=64"
};

// Whether the kernel may copy rows of q, k and v with 16-byte cp.async: the
// storage type is the operand type (no conversion), head_dim is a multiple of
// 8 elements, every row starts 16-byte aligned (base pointers and all strides).
bool vector_loads_ok(const AttnParams& p, KernelPath path);

// Which kernel instantiation serves p, for reports: e.g. "cuda-mma-f16 d=128
// bq=64 bk=64 compute=f32" (any build: the names are plain arithmetic).
std::string kernel_implementation(const AttnParams& p);

// The launch for p on a device: throws Error(usage) for a device older than
// sm_80 (the kernels use bf16 mma.sync and ldmatrix), shared memory beyond the
// device's limit, or a grid beyond 2^31 - 1 blocks.
LaunchShape plan_launch(const AttnParams& p, const DeviceLimits& dev);

// Block b of a launch computes query tile block_query_tile(b) of (batch, head)
// b / q_tiles. With causal masking the last query tiles see the most keys, so
// they start first (the tail of the grid then holds the short ones).
RA_HD std::int64_t block_query_tile(std::int64_t block, std::int64_t q_tiles, bool causal) {
  const std::int64_t i = block % q_tiles;
  return causal ? q_tiles - 1 - i : i;
}

// How many (query tile, key tile) pairs per (batch, head) a launch computes,
// and how many of them need the element mask (host side, for tests and reports).
struct TileCounts {
  std::int64_t total = 0, empty = 0, diagonal = 0, full = 0;
};
TileCounts count_tiles(const AttnParams& p, const TileShape& t);

// ---- what the CUDA translation units implement (CUDA builds only) --------------------

// Filled once by the host (attention_cuda.cpp), passed whole by value to the kernel.
struct KernelParams {
  const void* q;  // (batch, heads_q, n_q, head_dim) storage type, unit stride along dim
  const void* k;  // (batch, heads_kv, n_kv, head_dim)
  const void* v;  // (batch, heads_kv, n_kv, head_dim)
  std::int64_t q_batch_stride, q_head_stride, q_row_stride;  // elements
  std::int64_t k_batch_stride, k_head_stride, k_row_stride;
  std::int64_t v_batch_stride, v_head_stride, v_row_stride;
  float* m2;   // (batch, heads_q, n_q) running max, base 2
  float* l;    // (batch, heads_q, n_q) running sum
  float* acc;  // (batch, heads_q, n_q, head_dim) running P·V, dense
  std::int64_t heads_q, n_q, n_kv;
  std::int64_t group;  // heads_q / heads_kv: query head h reads kv head h / group
  int head_dim;        // <= the kernel's d_tile
  float scale_log2;    // softmax scale · log2(e)
  bool causal;
  bool vector_loads;     // vector_loads_ok
  std::int64_t q_tiles;  // ceil(n_q / block_q)
  std::int64_t k_tiles;  // ceil(n_kv / block_k)
  DevicePositions q_pos, k_pos;
};

// The kernel instantiation s names, on stream (a cudaStream_t), asynchronously.
void launch_attention_kernel(const KernelParams& p, const LaunchShape& s, void* stream);
// x[0..n) = value.
void launch_fill(float* x, std::int64_t n, float value, void* stream);
// o = acc / l, lse = (m2 + log2 l)·ln 2 per row; l = 0 gives o = 0, lse = -inf.
// o may be acc; lse may be nullptr.
void launch_finalize(const float* m2, const float* l, const float* acc, float* o, float* lse,
                     std::int64_t rows, std::int64_t head_dim, void* stream);

}  // namespace ringattn::cuda
