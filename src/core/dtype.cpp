// Storage-type conversions (IEEE binary16 by bit manipulation, no F16C needed).
#include "core/dtype.hpp"

#include <cstring>

#include "core/error.hpp"

namespace ringattn {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32:
      return "f32";
    case DType::f16:
      return "f16";
    case DType::bf16:
      return "bf16";
  }
  return "?";
}

DType parse_dtype(std::string_view s) {
  if (s == "f32" || s == "float32") return DType::f32;
  if (s == "f16" || s == "float16") return DType::f16;
  if (s == "bf16" || s == "bfloat16") return DType::bf16;
  RA_CHECK(false, usage, "unknown dtype '", s, "' (expected f32, f16 or bf16)");
}

float f16_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // Inf / NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400u) == 0);
    bits = sign | static_cast<std::uint32_t>(112 - e) << 23 | ((mant & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

std::uint16_t float_to_f16(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (absu >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: Inf
  if (absu >= 0x38800000u) {                       // normal half
    std::uint32_t v = absu - (112u << 23);
    v += 0xfffu + ((v >> 13) & 1u);
    return sign | static_cast<std::uint16_t>(v >> 13);
  }
  if (absu < 0x33000000u) return sign;  // below half the smallest subnormal
  // Subnormal half: shift the 24-bit significand, round to nearest even.
  const std::uint32_t e = absu >> 23;
  const std::uint32_t mant = (absu & 0x7fffffu) | 0x800000u;
  const std::uint32_t shift = 126u - e;  // in [14, 24]
  std::uint32_t v = mant >> shift;
  const std::uint32_t rem = mant & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (v & 1u))) ++v;
  return sign | static_cast<std::uint16_t>(v);
}

void load_f32(const void* src, DType t, float* dst, std::size_t n) {
  switch (t) {
    case DType::f32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::f16: {
      auto s = static_cast<const std::uint16_t*>(src);
      for (std::size_t i = 0; i < n; ++i) dst[i] = f16_to_float(s[i]);
      return;
    }
    case DType::bf16: {
      auto s = static_cast<const std::uint16_t*>(src);
      for (std::size_t i = 0; i < n; ++i) dst[i] = bf16_to_float(s[i]);
      return;
    }
  }
}

void store_from_f32(const float* src, DType t, void* dst, std::size_t n) {
  switch (t) {
    case DType::f32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::f16: {
      auto d = static_cast<std::uint16_t*>(dst);
      for (std::size_t i = 0; i < n; ++i) d[i] = float_to_f16(src[i]);
      return;
    }
    case DType::bf16: {
      auto d = static_cast<std::uint16_t*>(dst);
      for (std::size_t i = 0; i < n; ++i) d[i] = float_to_bf16(src[i]);
      return;
    }
  }
}

}  // namespace ringattn
