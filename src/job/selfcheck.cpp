// The kernel's self-check (see selfcheck.hpp).
#include "job/selfcheck.hpp"

#include <algorithm>
#include <cstdint>

#include "core/aligned_buffer.hpp"
#include "core/cpu.hpp"
#include "core/dtype.hpp"
#include "core/positions.hpp"
#include "core/seeded_data.hpp"
#include "kernel/attention.hpp"
#include "kernel/reference.hpp"

namespace ringattn {
namespace {

struct Case {
  const char* name;
  std::int64_t heads_q, heads_kv, n_q, n_kv, head_dim;  // as AttnParams spells them
  DType dtype;
  ComputeType compute;
  bool causal;
  Positions q_pos, k_pos;
  double tol;
};

}  // namespace

SelfcheckReport run_selfcheck(int threads) {
  threads = threads > 0 ? threads : default_threads();
  // A zigzag rank-1-of-2 query shard (chunks 1 and 2 of 4) over a full sequence.
  Positions zz;
  zz.append({40, 1, 40}).append({80, 1, 40});
  const std::vector<Case> cases = {
      {"plain f32", 2, 2, 130, 130, 64, DType::f32, ComputeType::f32, false, {}, {}, 1e-5},
      {"causal f32", 2, 2, 130, 130, 128, DType::f32, ComputeType::f32, true, {}, {}, 1e-5},
      {"GQA 4:1 causal", 4, 1, 97, 97, 80, DType::f32, ComputeType::f32, true, {}, {}, 1e-5},
      {"cross-attention", 2, 2, 33, 301, 16, DType::f32, ComputeType::f32, false, {}, {}, 1e-5},
      {"f16 storage", 2, 1, 100, 100, 64, DType::f16, ComputeType::f32, true, {}, {}, 1e-5},
      {"bf16 storage", 2, 2, 100, 100, 128, DType::bf16, ComputeType::f32, false, {}, {}, 1e-5},
      {"bf16 compute", 2, 2, 100, 100, 128, DType::f32, ComputeType::bf16, true, {}, {}, 2e-2},
      {"zigzag query shard", 2, 2, 80, 160, 64, DType::f32, ComputeType::f32, true, zz, {}, 1e-5},
      {"striped shards", 2, 2, 50, 50, 32, DType::f32, ComputeType::f32, true,
       Positions::strided(1, 3, 50), Positions::strided(2, 3, 50), 1e-5},
  };
  SelfcheckReport report;
  for (const auto& c : cases) {
    const std::size_t qn = static_cast<std::size_t>(c.heads_q * c.n_q * c.head_dim);
    const std::size_t kn = static_cast<std::size_t>(c.heads_kv * c.n_kv * c.head_dim);
    const std::size_t es = dtype_size(c.dtype);
    AlignedBuffer<char> q(qn * es), k(kn * es), v(kn * es);
    fill_seeded(q.data(), c.dtype, qn, 11, 0, 2.0f);
    fill_seeded(k.data(), c.dtype, kn, 12, 0, 2.0f);
    fill_seeded(v.data(), c.dtype, kn, 13);
    AttnParams p = AttnParams::dense(q.data(), k.data(), v.data(), c.dtype, 1, c.heads_q,
                                     c.heads_kv, c.n_q, c.n_kv, c.head_dim);
    p.causal = c.causal;
    p.compute = c.compute;
    p.q_pos = c.q_pos;
    p.k_pos = c.k_pos;
    p.threads = threads;
    const std::size_t rows = static_cast<std::size_t>(c.heads_q * c.n_q);
    std::vector<float> o(qn), lse(rows);
    std::vector<double> ro(qn), rlse(rows);
    attention_forward(p, o.data(), lse.data());
    reference_attention(p, ro.data(), rlse.data());
    const Comparison co = compare_to_reference(o.data(), ro.data(), static_cast<std::int64_t>(qn));
    const Comparison cl =
        compare_to_reference(lse.data(), rlse.data(), static_cast<std::int64_t>(rows));
    const double lse_err = cl.max_abs_err / std::max(1.0, cl.scale);
    report.cases.push_back(
        {c.name, co.rel_err, lse_err, c.tol, co.rel_err <= c.tol && lse_err <= c.tol});
  }
  report.kernel = kernel_implementation(
      AttnParams::dense(nullptr, nullptr, nullptr, DType::f32, 1, 1, 1, 1, 1, 128));
  return report;
}

int SelfcheckReport::failures() const {
  return static_cast<int>(
      std::count_if(cases.begin(), cases.end(), [](const auto& c) { return !c.ok; }));
}

}  // namespace ringattn
