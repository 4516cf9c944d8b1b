// The one AMX tile configuration ringattn uses (palette 1: eight tiles of
// 16 rows x 64 bytes, i.e. 16 x 16 fp32 or 16 x 32 bf16), loaded with
// _tile_loadconfig by the code that runs tiles: the bf16 tile products
// (kernel/tile_gemm.cpp) and their peak microbenchmark (core/fma_peak.cpp).
// Using tiles needs cpu_features().amx_bf16 (core/cpu.hpp), which also holds
// Linux's permission for the tile state.
#pragma once

#include <cstdint>

namespace ringattn {

struct alignas(64) AmxTileConfig {
  std::uint8_t palette = 1;
  std::uint8_t start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  std::uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

}  // namespace ringattn
