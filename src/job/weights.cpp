// Exact attention weights of selected rows (see weights.hpp).
#include "job/weights.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>

#include "core/documents.hpp"
#include "core/error.hpp"
#include "core/positions.hpp"
#include "core/timer.hpp"
#include "core/visibility.hpp"
#include "io/h5_describe.hpp"
#include "io/input_file.hpp"
#include "io/weights_file.hpp"
#include "job/run_facts.hpp"

namespace ringattn {
namespace {

// Full rows held in memory per (b, h) plane at most.
constexpr double kMaxPlaneBytes = 1024.0 * 1024 * 1024;

bool parse_int(const std::string& t, std::int64_t& out) {
  if (t.empty()) return false;
  std::size_t used = 0;
  try {
    out = std::stoll(t, &used);
  } catch (...) {
    return false;
  }
  return used == t.size();
}

// One plane's reads and sums: the rows of one query head against the K
// plane of its K/V head.
struct PlaneWork {
  const float* k = nullptr;  // (N_k, D)
  const float* q = nullptr;  // (R, D)
  const float* run_lse = nullptr;
  std::int64_t keys = 0, d = 0, top_k = 0;
  double scale = 0;
  Visibility vis;
  const std::vector<std::int64_t>* k_coord = nullptr;
  const Positions* q_coord = nullptr;
};

struct PlaneResult {
  double max_sum_error = 0, max_lse_difference = 0;
  std::int64_t rows_without_keys = 0;
};

// Row r's weights into w (N_k floats, full) or its top K into keys/w; its
// lse into lse. s: N_k doubles of scratch.
void row_weights(const PlaneWork& p, std::int64_t r, std::vector<double>& s,
                 std::vector<std::int64_t>& order, float* w, std::int64_t* keys, double& lse) {
  const std::int64_t qc = (*p.q_coord)[r];
  const std::int64_t lo = p.vis.first_key(qc), hi = p.vis.last_key(qc);
  const float* q = p.q + r * p.d;
  double top = -std::numeric_limits<double>::infinity();
  for (std::int64_t j = 0; j < p.keys; ++j) {
    const std::int64_t kc = (*p.k_coord)[static_cast<std::size_t>(j)];
    if (kc < lo || kc > hi) {
      s[static_cast<std::size_t>(j)] = -std::numeric_limits<double>::infinity();
      continue;
    }
    const float* k = p.k + j * p.d;
    double dot = 0;
    for (std::int64_t x = 0; x < p.d; ++x) dot += static_cast<double>(q[x]) * k[x];
    s[static_cast<std::size_t>(j)] = p.scale * dot;
    top = std::max(top, s[static_cast<std::size_t>(j)]);
  }
  double sum = 0;
  if (std::isfinite(top))
    for (std::int64_t j = 0; j < p.keys; ++j) sum += std::exp(s[static_cast<std::size_t>(j)] - top);
  lse = std::isfinite(top) ? top + std::log(sum) : -std::numeric_limits<double>::infinity();
  const auto weight = [&](std::int64_t j) {
    return std::isfinite(lse) ? std::exp(s[static_cast<std::size_t>(j)] - lse) : 0.0;
  };
  if (p.top_k == 0) {
    for (std::int64_t j = 0; j < p.keys; ++j) w[j] = static_cast<float>(weight(j));
    return;
  }
  // The K largest scores, largest first (ties: the earlier key).
  const std::int64_t k = std::min(p.top_k, p.keys);
  order.resize(static_cast<std::size_t>(p.keys));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](auto a, auto b) {
    const double sa = s[static_cast<std::size_t>(a)], sb = s[static_cast<std::size_t>(b)];
    return sa > sb || (sa == sb && a < b);
  });
  for (std::int64_t t = 0; t < p.top_k; ++t) {
    const bool seen = t < k && std::isfinite(s[static_cast<std::size_t>(order[t])]);
    keys[t] = seen ? order[static_cast<std::size_t>(t)] : -1;
    w[t] = seen ? static_cast<float>(weight(order[static_cast<std::size_t>(t)])) : 0.0f;
  }
}

PlaneResult plane_weights(const PlaneWork& p, std::int64_t R, std::vector<float>& w,
                          std::vector<std::int64_t>& keys, std::vector<double>& lse) {
  const std::int64_t width = p.top_k > 0 ? p.top_k : p.keys;
  w.assign(static_cast<std::size_t>(R * width), 0.0f);
  keys.assign(p.top_k > 0 ? static_cast<std::size_t>(R * width) : 0, -1);
  lse.assign(static_cast<std::size_t>(R), 0.0);
  PlaneResult res;
#pragma omp parallel
  {
    std::vector<double> s(static_cast<std::size_t>(p.keys));
    std::vector<std::int64_t> order;
    PlaneResult mine;
#pragma omp for schedule(dynamic)
    for (std::int64_t r = 0; r < R; ++r) {
      float* wr = w.data() + r * width;
      row_weights(p, r, s, order, wr, p.top_k > 0 ? keys.data() + r * width : nullptr,
                  lse[static_cast<std::size_t>(r)]);
      if (!std::isfinite(lse[static_cast<std::size_t>(r)])) {
        ++mine.rows_without_keys;
        continue;
      }
      if (p.top_k == 0) {
        double sum = 0;
        for (std::int64_t j = 0; j < width; ++j) sum += wr[j];
        mine.max_sum_error = std::max(mine.max_sum_error, std::abs(sum - 1.0));
      }
      if (p.run_lse)
        mine.max_lse_difference = std::max(
            mine.max_lse_difference,
            std::abs(static_cast<double>(p.run_lse[r]) - lse[static_cast<std::size_t>(r)]));
    }
#pragma omp critical
    {
      res.max_sum_error = std::max(res.max_sum_error, mine.max_sum_error);
      res.max_lse_difference = std::max(res.max_lse_difference, mine.max_lse_difference);
      res.rows_without_keys += mine.rows_without_keys;
    }
  }
  return res;
}

// Rows of plane (b, h) of `name` as f32, read in the stored type.
void read_f32_rows(H5RowReader& r, const std::string& name, std::int64_t b, std::int64_t h,
                   const std::vector<std::int64_t>* rows, DType stored, std::size_t count,
                   std::vector<float>& out) {
  out.resize(count);
  std::vector<unsigned char> raw(stored == DType::f32 ? 0 : count * dtype_size(stored));
  void* dst = stored == DType::f32 ? static_cast<void*>(out.data()) : raw.data();
  if (rows)
    r.read_rows(name, b, h, *rows, stored, dst);
  else
    r.read_plane(name, b, h, stored, dst);
  if (stored != DType::f32) load_f32(raw.data(), stored, out.data(), count);
}

}  // namespace

std::vector<std::int64_t> parse_index_spec(const std::string& spec, std::int64_t n,
                                           const std::string& what) {
  std::vector<std::int64_t> out;
  if (spec == "all") {
    out.resize(static_cast<std::size_t>(n));
    std::iota(out.begin(), out.end(), 0);
    return out;
  }
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    std::vector<std::string> parts;
    std::stringstream is(item);
    std::string part;
    while (std::getline(is, part, ':')) parts.push_back(part);
    if (!item.empty() && item.back() == ':') parts.emplace_back();
    std::int64_t a = 0, b = n, step = 1;
    bool ok = !parts.empty() && parts.size() <= 3;
    if (ok && parts.size() == 1) {
      ok = parse_int(parts[0], a) && a >= 0 && a < n;
      b = a + 1;
    } else if (ok) {
      ok = (parts[0].empty() || parse_int(parts[0], a)) &&
           (parts[1].empty() || parse_int(parts[1], b)) &&
           (parts.size() < 3 || parts[2].empty() || parse_int(parts[2], step)) && a >= 0 && a < b &&
           b <= n && step >= 1;
    }
    RA_CHECK(ok, usage, what, ": '", item, "' is not an index, A:B or A:B:S within [0, ", n, ")");
    for (std::int64_t i = a; i < b; i += step) out.push_back(i);
  }
  RA_CHECK(!out.empty(), usage, what, ": no indices in '", spec, "'");
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

WeightsReport write_attention_weights(const WeightsRequest& req) {
  Timer wall;
  RA_CHECK(req.top_k >= 0, usage, "weights --top-k: must be >= 0, got ", req.top_k);
  const H5FileDesc od =
      describe_h5_file(req.output, H5DescribeWhat{}, "output file '" + req.output + "'");
  const RunFacts run = read_facts(od);
  const InputInfo in = inspect_input(MPI_COMM_SELF, req.input, run.names);
  const Documents docs = read_input_documents(in);
  check_shapes(od, run, in.shape);
  const AttnShape& s = in.shape;
  const std::vector<std::int64_t> rows = parse_index_spec(req.rows, s.tokens_q, "weights --rows");
  const std::vector<std::int64_t> heads = parse_index_spec(req.heads, s.heads_q, "weights --heads");
  const auto R = static_cast<std::int64_t>(rows.size());
  RA_CHECK(req.top_k > 0 ||
               static_cast<double>(R) * static_cast<double>(s.tokens_kv) * 4 <= kMaxPlaneBytes,
           usage, "weights: ", R, " full rows of ", s.tokens_kv,
           " keys need more than 1 GiB per head; ask for fewer rows or --top-k K");

  WeightsFileSpec spec;
  spec.path = req.to;
  spec.overwrite = req.overwrite;
  spec.batch = s.batch;
  spec.keys = s.tokens_kv;
  spec.top_k = req.top_k;
  spec.rows = rows;
  spec.heads = heads;
  spec.attributes = {{"generator", std::string("ringattn weights")},
                     {"input", req.input},
                     {"output", req.output},
                     {"causal", std::int64_t{run.causal}},
                     {"window", run.window.text()},
                     {"documents", docs.count()},
                     {"scale", static_cast<double>(run.scale)},
                     {"top_k", req.top_k}};
  WeightsFile file(spec);

  const Window window = docs.window(run.window);
  const std::vector<std::int64_t> k_coord = [&] {
    const Positions kp = docs.k_coordinates(Positions::contiguous(0, s.tokens_kv));
    std::vector<std::int64_t> c(static_cast<std::size_t>(kp.size()));
    kp.fill(0, kp.size(), c.data());
    return c;
  }();
  const Positions q_coord = docs.q_coordinates(Positions::of_rows(rows.data(), rows.size()));
  H5RowReader input(req.input), output(req.output);
  WeightsReport rep;
  rep.shape = s;
  rep.rows = R;
  rep.heads = static_cast<std::int64_t>(heads.size());
  rep.has_run_lse = run.has_lse;
  std::vector<float> k, q, run_lse, w;
  std::vector<std::int64_t> keys;
  std::vector<double> lse;
  const std::int64_t group = s.heads_q / s.heads_kv, D = s.head_dim;
  for (std::int64_t b = 0; b < s.batch; ++b) {
    std::int64_t loaded = -1;  // the K/V head whose K plane is in k
    for (std::size_t j = 0; j < heads.size(); ++j) {
      const std::int64_t h = heads[j], hk = h / group;
      if (hk != loaded) {
        read_f32_rows(input, run.names.k, b, hk, nullptr, in.dtype,
                      static_cast<std::size_t>(s.tokens_kv * D), k);
        loaded = hk;
      }
      read_f32_rows(input, run.names.q, b, h, &rows, in.dtype, static_cast<std::size_t>(R * D), q);
      if (run.has_lse) {
        run_lse.resize(static_cast<std::size_t>(R));
        output.read_rows("lse", b, h, rows, DType::f32, run_lse.data());
      }
      PlaneWork p{
          k.data(),  q.data(),  run.has_lse ? run_lse.data() : nullptr, s.tokens_kv, D,
          req.top_k, run.scale, Visibility::of(run.causal, window),     &k_coord,    &q_coord};
      const PlaneResult pr = plane_weights(p, R, w, keys, lse);
      rep.max_sum_error = std::max(rep.max_sum_error, pr.max_sum_error);
      rep.max_lse_difference = std::max(rep.max_lse_difference, pr.max_lse_difference);
      rep.rows_without_keys += pr.rows_without_keys;
      file.write_plane(b, static_cast<std::int64_t>(j), w.data(),
                       req.top_k > 0 ? keys.data() : nullptr, lse.data());
    }
  }
  file.commit();
  rep.seconds = wall.seconds();
  return rep;
}

}  // namespace ringattn
