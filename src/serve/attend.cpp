// The service's attend pass (see attend.hpp).
#include "serve/attend.hpp"

#include <limits>

#include "core/error.hpp"
#include "kernel/attention.hpp"
#include "kernel/decode.hpp"
#include "kernel/params.hpp"

namespace ringattn::serve {
namespace {

// MPI's reduction callback: inout = merge(in, inout), row by row. merge() is
// symmetric, so the result may alias its first operand.
void merge_rows(void* in, void* inout, int* len, MPI_Datatype* type) {
  int bytes = 0;
  MPI_Type_size(*type, &bytes);
  const std::int64_t width = bytes / static_cast<int>(sizeof(float)), D = width - 1;
  const float* a = static_cast<const float*>(in);
  float* b = static_cast<float*>(inout);
  for (std::int64_t r = 0; r < *len; ++r) {
    float* row = b + r * width;
    const float* other = a + r * width;
    merge(1, D, row + 1, row, other + 1, other, row + 1, row);
  }
}

}  // namespace

std::vector<float> attend_shard(const ContextShard& shard, const AttendBatch& b, const void* q,
                                int threads) {
  const ContextInfo& c = shard.info();
  const std::int64_t H = b.heads, D = c.head_dim;
  std::int64_t N = 0;
  for (auto [first, n] : b.segments) N += n;
  std::vector<float> packed(static_cast<std::size_t>(H * N * (D + 1)), 0.0f);
  if (shard.rows() == 0) {
    for (std::int64_t r = 0; r < H * N; ++r)
      packed[static_cast<std::size_t>(r * (D + 1))] = -std::numeric_limits<float>::infinity();
    return packed;
  }
  AttnParams p;
  p.dtype = c.dtype;
  p.batch = 1;
  p.heads_q = H;
  p.heads_kv = c.heads_kv;
  p.n_q = N;
  p.n_kv = shard.rows();
  p.head_dim = D;
  p.q = {q, H * N * D, N * D, D};
  const std::int64_t hs = shard.head_stride_elements();
  p.k = {shard.k_head(0), c.heads_kv * hs, hs, D};
  p.v = {shard.v_head(0), c.heads_kv * hs, hs, D};
  p.causal = b.causal;
  p.window = b.window;
  for (auto [first, n] : b.segments) p.q_pos.append({first, 1, n});
  p.k_pos = shard.positions();
  p.threads = threads;
  std::vector<float> o(static_cast<std::size_t>(H * N * D)), lse(static_cast<std::size_t>(H * N));
  // The shard is resident and long: the tiled kernel would repack all of it
  // to f32 on every call (seconds for 1M keys), which only many query rows
  // amortise. The decode kernel streams it once in its type and stays at
  // ~0.7 of the FMA peak for batched rows too (measured to 64 rows per kv
  // head on Zen 3), so it serves every batch up to kDecodeRows rows per head
  // group; bf16 compute is not served (the context keeps f32 or f16).
  constexpr std::int64_t kDecodeRows = 1024;
  if (p.compute == ComputeType::f32 && N * (H / c.heads_kv) <= kDecodeRows)
    decode_attention(p, o.data(), lse.data());
  else
    attention_forward(p, o.data(), lse.data());
  for (std::int64_t r = 0; r < H * N; ++r) {
    float* row = packed.data() + r * (D + 1);
    row[0] = lse[static_cast<std::size_t>(r)];
    std::copy(o.begin() + r * D, o.begin() + (r + 1) * D, row + 1);
  }
  return packed;
}

void merge_partials_to_root(MPI_Comm comm, std::vector<float>& rows, std::int64_t head_dim) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  if (size == 1) return;
  MPI_Datatype row;
  RA_MPI_CHECK(MPI_Type_contiguous(static_cast<int>(head_dim + 1), MPI_FLOAT, &row));
  RA_MPI_CHECK(MPI_Type_commit(&row));
  MPI_Op op;
  // Not commutative: MPI then combines in rank order, so the bits of a
  // result do not depend on which rank's message arrived first.
  RA_MPI_CHECK(MPI_Op_create(merge_rows, 0, &op));
  const int count = static_cast<int>(rows.size() / static_cast<std::size_t>(head_dim + 1));
  const int rc =
      MPI_Reduce(rank == 0 ? MPI_IN_PLACE : rows.data(), rows.data(), count, row, op, 0, comm);
  MPI_Op_free(&op);
  MPI_Type_free(&row);
  RA_MPI_CHECK(rc);
}

}  // namespace ringattn::serve
