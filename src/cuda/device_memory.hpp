// Device and pinned host memory that only grows, for the buffers a ring keeps
// from chunk to chunk (the chunks of one job have nearly the same shape, so
// after the first they allocate nothing): the device ring's blocks, state
// and queries, its pinned home block, the staged transport's pinned buffers.
//
// Host code of the CUDA build only. Includes: cuda_runtime.h.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>

#include "core/error.hpp"

namespace ringattn::cuda {

template <cudaError_t (*Alloc)(void**, std::size_t), cudaError_t (*Free)(void*)>
class GrowingBytes {
 public:
  GrowingBytes() = default;
  ~GrowingBytes() {
    if (p_) Free(p_);
  }
  GrowingBytes(const GrowingBytes&) = delete;
  GrowingBytes& operator=(const GrowingBytes&) = delete;

  // At least bytes; the old contents are lost when it grows. Call only while
  // no stream uses the memory.
  char* get(std::size_t bytes) {
    if (bytes > capacity_ || !p_) {
      if (p_) RA_CUDA_CHECK(Free(p_));
      p_ = nullptr;
      capacity_ = 0;
      RA_CUDA_CHECK(Alloc(&p_, std::max<std::size_t>(bytes, 1)));
      capacity_ = bytes;
    }
    return static_cast<char*>(p_);
  }
  char* data() const { return static_cast<char*>(p_); }

 private:
  void* p_ = nullptr;
  std::size_t capacity_ = 0;
};

inline cudaError_t device_alloc(void** p, std::size_t n) {
  return cudaMalloc(p, n);
}
inline cudaError_t pinned_alloc(void** p, std::size_t n) {
  return cudaMallocHost(p, n);
}
using DeviceBytes = GrowingBytes<device_alloc, cudaFree>;
using PinnedBytes = GrowingBytes<pinned_alloc, cudaFreeHost>;

}  // namespace ringattn::cuda
