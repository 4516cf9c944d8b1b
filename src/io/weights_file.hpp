// The file `ringattn weights` writes: exact attention weights of selected
// query rows, or their top K keys, one (batch, head) plane at a time, by
// this process alone (serial HDF5), under a temporary name beside the target
// that takes the target's name only when complete.
//
//   rows     [R]            int64  the query token of each row
//   heads    [Hs]           int64  the query heads, in order
//   row_tokens [B, R]       int64  each row's token id in each batch row
//                                  (only when the input has token ids)
//   lse      [B, Hs, R]     f64    each row's log-sum-exp (-inf: sees no key)
//   full rows (top_k = 0):
//   weights  [B, Hs, R, N_k] f32   row r's weight on key j (0 where masked)
//   top K (top_k = K):
//   top_keys    [B, Hs, R, K] int64  the K keys of largest weight, largest
//                                    first (-1 past the keys a row sees)
//   top_weights [B, Hs, R, K] f32    their weights (0 past them)
//   root attributes: the caller's (AttrValue each).
//
// Error classes: a target that exists without overwrite: usage; HDF5 or
// filesystem failures: io.
//
// Includes: <cstdint>, <string>, <utility>, <vector>, io/h5_describe.hpp
// (AttrValue), io/h5_handle.hpp (H5Handle).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "io/h5_describe.hpp"
#include "io/h5_handle.hpp"

namespace ringattn {

struct WeightsFileSpec {
  std::string path;
  bool overwrite = false;
  std::int64_t batch = 1, keys = 0;  // keys: N_k
  std::int64_t top_k = 0;            // 0: full rows
  std::vector<std::int64_t> rows, heads;
  std::vector<std::int64_t> row_tokens;  // (B, R), or empty: none written
  std::vector<std::pair<std::string, AttrValue>> attributes;
};

class WeightsFile {
 public:
  explicit WeightsFile(const WeightsFileSpec& spec);
  WeightsFile(const WeightsFile&) = delete;
  WeightsFile& operator=(const WeightsFile&) = delete;
  ~WeightsFile();  // an uncommitted file's temporary is removed

  // Plane (b, j), j indexing spec.heads: weights (R, N_k) or, with top K,
  // keys and weights (R, K); lse (R).
  void write_plane(std::int64_t b, std::int64_t j, const float* weights, const std::int64_t* keys,
                   const double* lse);
  // Closes the file and renames it into place.
  void commit();

 private:
  void write(hid_t dset, std::int64_t b, std::int64_t j, std::int64_t width, hid_t mem_type,
             const void* data);

  WeightsFileSpec spec_;
  std::string temp_, ctx_;
  bool committed_ = false;
  H5Handle file_, weights_, keys_, lse_;
};

}  // namespace ringattn
