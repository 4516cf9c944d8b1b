// A context loaded from an HDF5 file: datasets k and v [B, H_kv, T, D] (or
// [H_kv, T, D]), f32 or f16, one batch of them. Rank 0 describes the file
// first in a child process (a damaged file may crash HDF5: io/h5_describe)
// and checks it; then every rank reads only its own pages' rows.
//
// Includes: nlohmann/json.hpp, core/dtype.hpp, serve/context_store.hpp.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "core/dtype.hpp"
#include "serve/context_store.hpp"

namespace ringattn::serve {

struct ContextFile {
  std::string path, k = "k", v = "v";
  std::int64_t batch = 0;
  bool rank4 = true;  // [B, H_kv, T, D] (else [H_kv, T, D])
  DType dtype = DType::f32;
  std::int64_t heads_kv = 0, tokens = 0, head_dim = 0;
};
void to_json(nlohmann::json& j, const ContextFile& f);
void from_json(const nlohmann::json& j, ContextFile& f);

// Rank 0: what the file holds, or Error(input/io) saying why it cannot be
// served (missing datasets, shapes or types that differ, external or
// virtual storage, filters this HDF5 cannot decode, a batch not in it).
ContextFile describe_context_file(const std::string& path, const std::string& k,
                                  const std::string& v, std::int64_t batch);

// Every rank: a new context `name` holding this rank's rows of the file
// (NaN or Inf refused); on any failure the context is gone again.
void read_context_file(ContextStore& store, const std::string& name, const ContextFile& f);

// "NaN at [h, t, d]" (or Inf) for the first non-finite element of a
// [heads][rows][dim] array of type t, or "".
std::string first_nonfinite(const void* data, DType t, std::int64_t heads, std::int64_t rows,
                            std::int64_t dim);

}  // namespace ringattn::serve
