// The K/V block that travels the ring, stated once: K then V, each dense
// (batch, heads_kv, tokens, head_dim) in the storage type, with H_kv heads
// (never expanded to H_q: DESIGN's pitfalls). Rank r's block holds
// kv_part.local_size(r) tokens; a ring buffer holds the largest of them.
// The CPU ring, the device ring, the step's kernel problem, the job (which
// reads K and V straight into the ring's home block) and the memory estimate
// all take offsets and sizes from here.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/checked.hpp"
#include "core/dtype.hpp"
#include "kernel/params.hpp"
#include "ring/partition.hpp"

namespace ringattn {

// What every block of one ring run shares.
struct KvShape {
  DType dtype = DType::f32;  // storage type: K and V travel in it
  std::int64_t batch = 1, heads_kv = 1, head_dim = 0;
  friend bool operator==(const KvShape&, const KvShape&) = default;
};

// One block's layout: offsets and sizes in bytes, and the kernel's view.
struct KvBlock {
  KvShape shape;
  std::int64_t tokens = 0;

  // Rank r's block of a ring over kv_part.
  static KvBlock of_rank(const KvShape& shape, const Partition& kv_part, int r) {
    return {shape, kv_part.local_size(r)};
  }
  // The largest block of kv_part: what one ring buffer must hold.
  static KvBlock largest(const KvShape& shape, const Partition& kv_part) {
    return {shape, kv_part.max_local_size()};
  }

  // K alone (V is the same size): (batch, heads_kv, tokens, head_dim).
  std::size_t tensor_bytes() const {
    return static_cast<std::size_t>(shape.batch * shape.heads_kv * tokens * shape.head_dim) *
           dtype_size(shape.dtype);
  }
  std::size_t bytes() const { return 2 * tensor_bytes(); }  // K then V: what a hop moves
  // The block's gradients, dK then dV, each (batch, heads_kv, tokens,
  // head_dim) f32: what travels with it in the backward.
  std::size_t grad_bytes() const {
    return static_cast<std::size_t>(2 * shape.batch * shape.heads_kv * tokens * shape.head_dim) *
           sizeof(float);
  }
  std::size_t v_offset() const { return tensor_bytes(); }

  // The kernel's views of K and V in a block stored at base.
  TensorRef k(const void* base) const { return view(base, 0); }
  TensorRef v(const void* base) const { return view(base, v_offset()); }

 private:
  TensorRef view(const void* base, std::size_t offset) const {
    const std::int64_t row = shape.head_dim, head = tokens * row;
    return {static_cast<const char*>(base) + offset, shape.heads_kv * head, head, row};
  }
};

// A block in memory this rank writes: the ring's home block, where the
// caller reads its K and V before the ring runs.
struct KvBlockRef {
  char* data = nullptr;
  KvBlock layout;
  char* k() const { return data; }                      // (batch, heads_kv, tokens, head_dim)
  char* v() const { return data + layout.v_offset(); }  // (batch, heads_kv, tokens, head_dim)
};

// Host bytes a ring holds for a run over kv_part: `blocks` buffers of the
// largest block (the CPU ring's two: the first is the home block, so the
// caller needs no K and V buffers of its own). For the memory estimate of
// shapes a file may declare, so checked: kBytesOverflow when it cannot fit.
inline std::int64_t ring_buffer_bytes(const KvShape& shape, const Partition& kv_part,
                                      int blocks = 2) {
  Checked c;
  const std::int64_t bytes =
      c.mul({blocks, 2, shape.batch, shape.heads_kv, kv_part.max_local_size(), shape.head_dim,
             static_cast<std::int64_t>(dtype_size(shape.dtype))});
  return c.overflow ? kBytesOverflow : bytes;
}

// Host bytes the CPU ring adds for a backward run over kv_part: room for
// the travelling gradients behind both block buffers, and one step's part.
inline std::int64_t ring_gradient_bytes(const KvShape& shape, const Partition& kv_part) {
  Checked c;
  const std::int64_t bytes = c.mul({3, 2, shape.batch, shape.heads_kv, kv_part.max_local_size(),
                                    shape.head_dim, static_cast<std::int64_t>(sizeof(float))});
  return c.overflow ? kBytesOverflow : bytes;
}

}  // namespace ringattn
