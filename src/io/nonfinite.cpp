// The scan for NaN and Inf and the agreed verdict (see nonfinite.hpp).
#include "io/nonfinite.hpp"

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstring>
#include <vector>

#include "comm/agree.hpp"
#include "core/error.hpp"

namespace ringattn {
namespace {

// A float is NaN or Inf exactly when all its exponent bits are set.
struct F32Bits {
  static constexpr std::uint32_t kExp = 0x7f800000u, kMant = 0x007fffffu, kSign = 0x80000000u;
};
struct F16Bits {
  static constexpr std::uint16_t kExp = 0x7c00u, kMant = 0x03ffu, kSign = 0x8000u;
};
struct Bf16Bits {
  static constexpr std::uint16_t kExp = 0x7f80u, kMant = 0x007fu, kSign = 0x8000u;
};

// Index of the first element of p[0, n) whose exponent bits are all set, or
// -1. Blocks of kBlock elements are tested with a branch-free OR (the
// compiler vectorises it); only a flagged block is searched one by one.
template <class U, class Traits>
std::int64_t first_bad(const unsigned char* bytes, std::int64_t n) {
  constexpr std::int64_t kBlock = 2048;
  U buf[kBlock];
  for (std::int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const std::int64_t m = std::min(kBlock, n - i0);
    // memcpy: the buffer holds raw bytes (HDF5 wrote them), read as bits
    // without aliasing questions; it stays in L1 for the second pass.
    std::memcpy(buf, bytes + static_cast<std::size_t>(i0) * sizeof(U),
                static_cast<std::size_t>(m) * sizeof(U));
    U any = 0;
    for (std::int64_t i = 0; i < m; ++i)
      any |= static_cast<U>((buf[i] & Traits::kExp) == Traits::kExp);
    if (!any) continue;
    for (std::int64_t i = 0; i < m; ++i)
      if ((buf[i] & Traits::kExp) == Traits::kExp) return i0 + i;
  }
  return -1;
}

template <class U, class Traits>
NonfiniteElement::Kind kind_of(const unsigned char* bytes, std::int64_t i) {
  U x = 0;
  std::memcpy(&x, bytes + static_cast<std::size_t>(i) * sizeof(U), sizeof(U));
  if (x & Traits::kMant) return NonfiniteElement::nan;
  return (x & Traits::kSign) ? NonfiniteElement::neg_inf : NonfiniteElement::pos_inf;
}

const char* kind_name(std::int64_t k) {
  return k == NonfiniteElement::pos_inf ? "+Inf" : k == NonfiniteElement::neg_inf ? "-Inf" : "NaN";
}

// The reduction: lexicographic minimum of (b, h, n, d), carrying the kind.
// One element of a contiguous type of 5 int64, so MPI never splits a tuple.
constexpr int kTuple = 5;
void min_tuple(void* in, void* inout, int* len, MPI_Datatype*) {
  auto* a = static_cast<const std::int64_t*>(in);
  auto* b = static_cast<std::int64_t*>(inout);
  for (int e = 0; e < *len; ++e, a += kTuple, b += kTuple)
    if (std::lexicographical_compare(a, a + 4, b, b + 4)) std::copy(a, a + kTuple, b);
}

}  // namespace

bool find_first_nonfinite(const void* data, DType dtype, const BatchHeadRange& range,
                          const Positions& rows, std::int64_t D, NonfiniteElement& first) {
  const std::int64_t n_rows = rows.size();
  const std::int64_t total = range.b_count * range.h_count * n_rows * D;
  if (total <= 0 || data == nullptr) return false;
  const auto* bytes = static_cast<const unsigned char*>(data);
  std::int64_t i = -1;
  NonfiniteElement::Kind kind = NonfiniteElement::nan;
  switch (dtype) {
    case DType::f32:
      i = first_bad<std::uint32_t, F32Bits>(bytes, total);
      if (i >= 0) kind = kind_of<std::uint32_t, F32Bits>(bytes, i);
      break;
    case DType::f16:
      i = first_bad<std::uint16_t, F16Bits>(bytes, total);
      if (i >= 0) kind = kind_of<std::uint16_t, F16Bits>(bytes, i);
      break;
    case DType::bf16:
      i = first_bad<std::uint16_t, Bf16Bits>(bytes, total);
      if (i >= 0) kind = kind_of<std::uint16_t, Bf16Bits>(bytes, i);
      break;
  }
  if (i < 0) return false;
  // The buffer is (b_count, h_count, rows, D) in row-major order, and the
  // positions increase along the rows, so the first local element is also
  // this rank's first in the dataset's order.
  const std::int64_t d = i % D, row = (i / D) % n_rows, plane = i / (D * n_rows);
  first.index = {range.b0 + plane / range.h_count, range.h0 + plane % range.h_count, rows[row], d};
  first.kind = kind;
  return true;
}

void check_finite_shard(MPI_Comm comm, const void* data, DType dtype, const BatchHeadRange& range,
                        const Positions& rows, std::int64_t D, const std::string& file,
                        const std::string& dataset) {
  NonfiniteElement mine;
  const bool found = find_first_nonfinite(data, dtype, range, rows, D, mine);
  std::int64_t local[kTuple] = {INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX, 0};
  if (found) {
    std::copy(mine.index.begin(), mine.index.end(), local);
    local[4] = mine.kind;
  }
  std::int64_t first[kTuple] = {};

  MPI_Datatype tuple = MPI_DATATYPE_NULL;
  MPI_Op op = MPI_OP_NULL;
  RA_MPI_CHECK(MPI_Type_contiguous(kTuple, MPI_INT64_T, &tuple));
  RA_MPI_CHECK(MPI_Type_commit(&tuple));
  RA_MPI_CHECK(MPI_Op_create(min_tuple, /*commute=*/1, &op));
  const int rc = MPI_Allreduce(local, first, 1, tuple, op, comm);
  MPI_Op_free(&op);
  MPI_Type_free(&tuple);
  RA_MPI_CHECK(rc);
  if (first[0] == INT64_MAX) return;

  // The rank holding the element raises the error; agree() hands its text
  // (with its host and rank) to every rank.
  const bool owner = found && std::equal(local, local + 4, first);
  agree(comm, [&] {
    RA_CHECK(!owner, input, "input file '", file, "', dataset '", dataset, "': has ",
             kind_name(first[4]), " at [", first[0], ", ", first[1], ", ", first[2], ", ", first[3],
             "] (the first non-finite element; pass --allow-nonfinite, or set [input] "
             "allow_nonfinite = true, to accept it)");
  });
  // Unreachable unless the ranks disagree about who owns it: still fail alike.
  RA_CHECK(false, internal, "input file '", file, "', dataset '", dataset,
           "': non-finite element found but no rank owns it");
}

double max_abs_finite(MPI_Comm comm, const void* data, DType dtype, std::size_t n) {
  float m = 0.0f;
  if (data != nullptr && n > 0) {
    if (dtype == DType::f32) {
      const auto* x = static_cast<const float*>(data);
      for (std::size_t i = 0; i < n; ++i) {
        const float a = std::fabs(x[i]);
        m = a <= FLT_MAX && a > m ? a : m;  // NaN and Inf fail the first test
      }
    } else {
      // f16 and bf16 are widened one at a time: the rare path (f16 inputs
      // cannot come near fp32's range; this is for completeness).
      for (std::size_t i = 0; i < n; ++i) {
        const float a = std::fabs(element_f32(data, dtype, i));
        m = a <= FLT_MAX && a > m ? a : m;
      }
    }
  }
  double mine = m, all = 0;
  RA_MPI_CHECK(MPI_Allreduce(&mine, &all, 1, MPI_DOUBLE, MPI_MAX, comm));
  return all;
}

}  // namespace ringattn
