// Seeded tensor fill (see seeded_data.hpp).
#include "core/seeded_data.hpp"

#include <vector>

namespace ringattn {

void fill_seeded(void* dst, DType t, std::size_t n, std::uint64_t seed, std::uint64_t first,
                 float amplitude) {
  constexpr std::size_t kChunk = 4096;
  std::vector<float> buf(kChunk);
  for (std::size_t i = 0; i < n; i += kChunk) {
    const std::size_t m = n - i < kChunk ? n - i : kChunk;
    for (std::size_t j = 0; j < m; ++j) buf[j] = amplitude * seeded_uniform(seed, first + i + j);
    store_from_f32(buf.data(), t, static_cast<char*>(dst) + i * dtype_size(t), m);
  }
}

}  // namespace ringattn
