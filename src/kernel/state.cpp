// AttnState allocation and reset.
#include "kernel/state.hpp"

#include "core/error.hpp"

namespace ringattn {

AttnState::AttnState(std::int64_t b, std::int64_t h, std::int64_t n, std::int64_t d)
    : batch(b), heads(h), rows(n), head_dim(d) {
  RA_CHECK(b >= 0 && h >= 0 && n >= 0 && d >= 1, internal, "bad state shape (", b, ", ", h, ", ", n,
           ", ", d, ")");
  m2.resize(static_cast<std::size_t>(b * h * n));
  l.resize(static_cast<std::size_t>(b * h * n));
  acc.resize(static_cast<std::size_t>(b * h * n * d));
  reset();
}

void AttnState::reset() {
  m2.fill(-__builtin_inff());
  l.fill(0.0f);
  acc.fill(0.0f);
}

}  // namespace ringattn
