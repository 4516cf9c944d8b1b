// The travelling block's one layout (ring/kv_block.hpp): K then V, each
// dense (batch, heads_kv, tokens, head_dim), rank r's block sized by its
// shard, the ring buffers by the largest. Checked against the layout written
// out element by element, so a drift between what the ring sends, what the
// job reads into the home block and what the kernel reads shows here.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/dtype.hpp"
#include "ring/kv_block.hpp"
#include "ring/partition.hpp"

namespace ringattn {
namespace {

TEST(KvBlock, KThenVEachDense) {
  for (DType t : {DType::f32, DType::f16, DType::bf16}) {
    const KvShape shape{t, 2, 3, 40};
    const KvBlock b{shape, 7};
    const std::size_t es = dtype_size(t);
    EXPECT_EQ(b.tensor_bytes(), 2u * 3 * 7 * 40 * es);
    EXPECT_EQ(b.bytes(), 2 * b.tensor_bytes());
    EXPECT_EQ(b.v_offset(), b.tensor_bytes());

    // Element (batch 1, head 2, token 5, dim 3) of K and of V, in elements
    // from the block's start, as the kernel's strides find it.
    std::vector<char> block(b.bytes());
    char* const base = block.data();
    const TensorRef k = b.k(base), v = b.v(base);
    const std::int64_t at_k = 1 * k.batch_stride + 2 * k.head_stride + 5 * k.row_stride + 3;
    const std::int64_t at_v = 1 * v.batch_stride + 2 * v.head_stride + 5 * v.row_stride + 3;
    const std::int64_t dense = ((1 * 3 + 2) * 7 + 5) * 40 + 3;
    EXPECT_EQ(at_k, dense);
    EXPECT_EQ(at_v, dense);
    EXPECT_EQ(static_cast<const char*>(k.data), base);
    EXPECT_EQ(static_cast<const char*>(v.data), base + b.v_offset());

    const KvBlockRef ref{base, b};
    EXPECT_EQ(ref.k(), base);
    EXPECT_EQ(ref.v(), base + b.tensor_bytes());
  }
}

TEST(KvBlock, RanksBlocksAndTheRingBuffers) {
  const KvShape shape{DType::bf16, 1, 2, 64};
  for (PartitionKind kind :
       {PartitionKind::contiguous, PartitionKind::zigzag, PartitionKind::striped}) {
    const Partition part(kind, 1001, 3);
    std::size_t largest = 0;
    for (int r = 0; r < 3; ++r) {
      const KvBlock b = KvBlock::of_rank(shape, part, r);
      EXPECT_EQ(b.tokens, part.local_size(r));
      largest = std::max(largest, b.bytes());
    }
    EXPECT_EQ(KvBlock::largest(shape, part).bytes(), largest) << partition_name(kind);
    EXPECT_EQ(ring_buffer_bytes(shape, part), 2 * largest) << partition_name(kind);
  }
}

}  // namespace
}  // namespace ringattn
