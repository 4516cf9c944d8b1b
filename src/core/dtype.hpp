// Storage types (f32, IEEE f16, bf16) and their conversions to and from f32.
// Conversions are bit-exact and portable; they run O(N·D) times per block
// against O(N²·D) flops, so they need not be vectorised by hand.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ringattn {

enum class DType { f32, f16, bf16 };

constexpr std::size_t dtype_size(DType t) {
  return t == DType::f32 ? 4 : 2;
}
const char* dtype_name(DType t);
// Parses "f32" | "f16" | "bf16" (also "float32", "float16", "bfloat16").
DType parse_dtype(std::string_view s);

inline float bf16_to_float(std::uint16_t h) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16);
}

// Round to nearest even; NaN stays NaN (quiet), Inf stays Inf.
inline std::uint16_t float_to_bf16(float f) {
  std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

float f16_to_float(std::uint16_t h);
// Round to nearest even, overflow to Inf, subnormals kept.
std::uint16_t float_to_f16(float f);

// Rounds f to the nearest bf16 value, returned as f32 (the bf16 compute path).
inline float round_to_bf16(float f) {
  return bf16_to_float(float_to_bf16(f));
}

// dst[i] = src[i] as f32 for n elements of type t.
void load_f32(const void* src, DType t, float* dst, std::size_t n);
// dst[i] = src[i] rounded to type t.
void store_from_f32(const float* src, DType t, void* dst, std::size_t n);
// Element i of src (type t) as f32.
inline float element_f32(const void* src, DType t, std::size_t i) {
  switch (t) {
    case DType::f32:
      return static_cast<const float*>(src)[i];
    case DType::f16:
      return f16_to_float(static_cast<const std::uint16_t*>(src)[i]);
    case DType::bf16:
      return bf16_to_float(static_cast<const std::uint16_t*>(src)[i]);
  }
  return 0.0f;
}

}  // namespace ringattn
