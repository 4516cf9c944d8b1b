// A seeded synthetic input file: q [B, H, N, D], k and v [B, HK, NK, D], and
// for a backward run the upstream gradient `do` [B, H, N, D], whose element i
// (over the flattened tensor) is amplitude · seeded_uniform(seed', i) with
// seed' = seed for q, seed + 1 for k, seed + 2 for v, seed + 3 for do. Any
// slice of the file can therefore be rebuilt without it
// (core/seeded_data.hpp), which is what tests and scaling studies need from
// an input.
//
// The file is written by this process alone (serial HDF5), one (batch, head)
// plane at a time, so memory stays O(N·D) whatever B and H are; like the
// output of a run, it is written under a temporary name beside the target and
// renamed only when complete, and an existing target is replaced only with
// `overwrite`.
//
// Error classes: bad shapes or arguments, a target that exists without
// overwrite or is a directory: `usage`; a missing or unwritable directory,
// HDF5 or filesystem failures: `io`.
//
// Includes: core/dtype.hpp (DType).
#pragma once

#include <cstdint>
#include <string>

#include "core/dtype.hpp"
#include "core/shape.hpp"

namespace ringattn {

struct SyntheticSpec {
  std::string path;        // the file to write
  bool overwrite = false;  // replace an existing file
  // q [batch, heads_q, tokens_q, head_dim], k and v [batch, heads_kv, tokens_kv, head_dim]
  AttnShape shape{
      .batch = 1, .heads_q = 4, .heads_kv = 4, .tokens_q = 4096, .tokens_kv = 4096, .head_dim = 64};
  DType dtype = DType::f32;                // f32 or f16 (IEEE half, as h5py writes it)
  std::uint64_t seed = 1;                  // q: seed, k: seed + 1, v: seed + 2, do: seed + 3
  float amplitude = 1.0f;                  // values uniform in [-amplitude, amplitude)
  bool chunked = false;                    // chunks (1, 1, min(N, 4096), D); else contiguous
  int gzip = 0;                            // deflate level 1..9 (implies chunked); 0: none
  std::string generator = "ringattn gen";  // recorded in the `generator` attribute
  // Also write `do` (kDoDataset), q's shape and type: the upstream gradient a
  // backward run (`run --backward`) reads.
  bool with_do = false;
  // Packed sequences (core/documents.hpp, packed_offsets): "" writes a dense
  // input; a spec writes `cu_seqlens` int64 (or `cu_seqlens_q` and
  // `cu_seqlens_k` when tokens_q != tokens_kv), and needs batch 1.
  std::string docs;
};

// The chunk dims write_synthetic_input uses for a dataset of n tokens.
inline std::int64_t synthetic_chunk_tokens(std::int64_t n) {
  return n < 4096 ? n : 4096;
}

// Writes the file (see above; q, k, v, then do) with root attributes generator, ringattn_version,
// seed, amplitude and seed_rule (the formula, in words). Returns the file's
// size in bytes.
std::int64_t write_synthetic_input(const SyntheticSpec& spec);

}  // namespace ringattn
