// AlignedBuffer: 64-byte alignment for every buffer, 2 MiB (a huge page)
// from 8 MiB on, contents kept by copies and moves.
#include <gtest/gtest.h>

#include <cstdint>
#include <utility>

#include "core/aligned_buffer.hpp"

namespace ringattn {
namespace {

std::uintptr_t address(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p);
}

TEST(AlignedBuffer, SmallBuffersAre64ByteAligned) {
  for (const std::size_t n : {1, 15, 1000, 1 << 20}) {
    AlignedBuffer<float> b(n);
    ASSERT_NE(b.data(), nullptr);
    EXPECT_EQ(address(b.data()) % 64, 0u) << n << " floats";
    b[n - 1] = 3.0f;
    EXPECT_EQ(b[n - 1], 3.0f);
  }
}

TEST(AlignedBuffer, LargeBuffersStartOnAHugePage) {
  constexpr std::size_t kHuge = std::size_t{2} << 20;
  // Just below 8 MiB: 64 bytes; from 8 MiB on, and an odd size past it: 2 MiB.
  AlignedBuffer<char> below(4 * kHuge - 64);
  EXPECT_EQ(address(below.data()) % 64, 0u);
  for (const std::size_t bytes : {4 * kHuge, 5 * kHuge + 12345}) {
    AlignedBuffer<char> b(bytes);
    ASSERT_NE(b.data(), nullptr);
    EXPECT_EQ(address(b.data()) % kHuge, 0u) << bytes << " bytes";
    EXPECT_EQ(b.size(), bytes);
    b[0] = 1;
    b[bytes - 1] = 2;  // the last byte is inside the allocation
    EXPECT_EQ(b[0] + b[bytes - 1], 3);
  }
}

TEST(AlignedBuffer, CopiesAndMovesKeepTheContents) {
  AlignedBuffer<std::int64_t> a((std::size_t{9} << 20) / sizeof(std::int64_t));
  for (std::size_t i = 0; i < a.size(); i += 4099) a[i] = static_cast<std::int64_t>(i);
  AlignedBuffer<std::int64_t> copy = a;
  AlignedBuffer<std::int64_t> moved = std::move(a);
  ASSERT_EQ(copy.size(), moved.size());
  for (std::size_t i = 0; i < copy.size(); i += 4099) {
    EXPECT_EQ(copy[i], static_cast<std::int64_t>(i));
    EXPECT_EQ(moved[i], static_cast<std::int64_t>(i));
  }
  moved.resize(0);
  EXPECT_EQ(moved.data(), nullptr);
}

}  // namespace
}  // namespace ringattn
