// A fixed-size, 64-byte-aligned array: the unit of memory for tiles, states
// and ring buffers (aligned for full-width vector loads, no false sharing).
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace ringattn {

// `bytes` (a multiple of align) on an align-byte boundary, or nullptr. From 8 MiB on
// (packed tiles, ring blocks) whole 2 MiB pages, asked for as transparent
// huge pages where Linux hands them out on request (mode madvise): one page
// fault and one TLB entry per 2 MiB instead of 512. The tail's rounding is
// at most a quarter.
inline void* allocate_aligned(std::size_t bytes, std::size_t align) {
#if defined(MADV_HUGEPAGE)
  constexpr std::size_t kHugePage = std::size_t{2} << 20;
  if (bytes >= 4 * kHugePage) {
    bytes = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    void* p = std::aligned_alloc(kHugePage, bytes);
    if (p) madvise(p, bytes, MADV_HUGEPAGE);
    return p;
  }
#endif
  return std::aligned_alloc(align, bytes);
}

template <class T>
class AlignedBuffer {
 public:
  static constexpr std::size_t kAlign = 64;

  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t n) { resize(n); }
  AlignedBuffer(const AlignedBuffer& o) : AlignedBuffer(o.n_) {
    if (n_) std::memcpy(p_, o.p_, n_ * sizeof(T));
  }
  AlignedBuffer(AlignedBuffer&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  ~AlignedBuffer() { std::free(p_); }

  // Contents are not preserved (buffers are scratch or fully rewritten).
  void resize(std::size_t n) {
    if (n == n_) return;
    std::free(p_);
    p_ = nullptr;
    n_ = 0;
    if (n == 0) return;
    std::size_t bytes = (n * sizeof(T) + kAlign - 1) / kAlign * kAlign;
    p_ = static_cast<T*>(allocate_aligned(bytes, kAlign));
    if (!p_) throw std::bad_alloc();
    n_ = n;
  }
  void fill(const T& v) {
    for (std::size_t i = 0; i < n_; ++i) p_[i] = v;
  }

  T* data() { return p_; }
  const T* data() const { return p_; }
  std::size_t size() const { return n_; }
  T& operator[](std::size_t i) { return p_[i]; }
  const T& operator[](std::size_t i) const { return p_[i]; }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

}  // namespace ringattn
