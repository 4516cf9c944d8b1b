// The one allocator of a kernel call's scratch buffers: every buffer comes
// from here, so the bytes it counts are the bytes the call allocated (what
// the kernels' last_*_workspace_bytes report and the tests compare with
// their estimates).
//
// Includes: core/aligned_buffer.hpp.
#pragma once
#include <atomic>
#include <cstddef>

#include "core/aligned_buffer.hpp"

namespace ringattn {

class Workspace {
 public:
  template <class T>
  AlignedBuffer<T> buffer(std::size_t n) {
    bytes_.fetch_add(n * sizeof(T), std::memory_order_relaxed);
    return AlignedBuffer<T>(n);
  }
  std::size_t bytes() const { return bytes_.load(); }

 private:
  std::atomic<std::size_t> bytes_{0};
};

}  // namespace ringattn
