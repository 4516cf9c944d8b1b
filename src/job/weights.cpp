// Exact attention weights of selected rows (see weights.hpp).
#include "job/weights.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <sstream>
#include <string_view>

#include "comm/agree.hpp"
#include "core/documents.hpp"
#include "core/error.hpp"
#include "core/positions.hpp"
#include "core/timer.hpp"
#include "core/visibility.hpp"
#include "io/h5_describe.hpp"
#include "io/input_file.hpp"
#include "io/weights_file.hpp"
#include "job/run_facts.hpp"
#include "job/setting.hpp"
#include "ring/partition.hpp"

namespace ringattn {
namespace {

// Full rows held in memory per (b, h) plane at most.
constexpr double kMaxPlaneBytes = 1024.0 * 1024 * 1024;

// An integer all of t spells (the settings' parse) into out.
bool parse_int(const std::string& t, std::int64_t& out) {
  const auto v = integer_in_text(t);
  if (v) out = *v;
  return v.has_value();
}

// One plane's sums on this rank: the rows of one query head against this
// rank's shard of the K plane of its K/V head.
struct PlaneWork {
  const float* k = nullptr;               // (keys, D)
  const std::int64_t* key_ids = nullptr;  // (keys): their indices among all N_k
  const float* q = nullptr;               // (R, D)
  std::int64_t keys = 0, d = 0, top_k = 0;
  double scale = 0;
  Visibility vis;
  const std::vector<std::int64_t>* k_coord = nullptr;  // (keys): the shard's coordinates
  const Positions* q_coord = nullptr;
};

// Row r's scores s_j = scale q_r.k_j over the shard's keys (-inf where r
// does not see j) into s; returns their maximum.
double row_scores(const PlaneWork& p, std::int64_t r, std::vector<double>& s) {
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
  return top;
}

// A row's candidate keys (global index, -1: none) and their scores, K each.
struct Candidates {
  std::vector<std::int64_t> keys;
  std::vector<double> scores;
};

// The K largest of n scores, largest first; ties go to the earlier key.
void top_scores(const double* s, const std::int64_t* key, std::int64_t n, std::int64_t K,
                std::vector<std::int64_t>& order, std::int64_t* out_keys, double* out_scores) {
  const std::int64_t k = std::min(K, n);
  order.resize(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](auto a, auto b) {
    return s[a] > s[b] || (s[a] == s[b] && key[a] < key[b]);
  });
  for (std::int64_t t = 0; t < K; ++t) {
    const bool seen = t < k && std::isfinite(s[order[static_cast<std::size_t>(t)]]);
    out_keys[t] = seen ? key[order[static_cast<std::size_t>(t)]] : -1;
    out_scores[t] =
        seen ? s[order[static_cast<std::size_t>(t)]] : -std::numeric_limits<double>::infinity();
  }
}

// Pass 1 over the shard: each row's largest score m, Σ exp(s_j - m), and
// with top K its K best keys.
void shard_sums(const PlaneWork& p, std::int64_t R, std::vector<double>& m,
                std::vector<double>& sum, Candidates& c) {
  m.assign(static_cast<std::size_t>(R), 0.0);
  sum.assign(static_cast<std::size_t>(R), 0.0);
  c.keys.assign(static_cast<std::size_t>(R * p.top_k), -1);
  c.scores.assign(static_cast<std::size_t>(R * p.top_k), 0.0);
#pragma omp parallel
  {
    std::vector<double> s(static_cast<std::size_t>(p.keys));
    std::vector<std::int64_t> order;
#pragma omp for schedule(dynamic)
    for (std::int64_t r = 0; r < R; ++r) {
      const double top = row_scores(p, r, s);
      double total = 0;
      if (std::isfinite(top))
        for (std::int64_t j = 0; j < p.keys; ++j)
          total += std::exp(s[static_cast<std::size_t>(j)] - top);
      m[static_cast<std::size_t>(r)] = top;
      sum[static_cast<std::size_t>(r)] = total;
      if (p.top_k > 0)
        top_scores(s.data(), p.key_ids, p.keys, p.top_k, order, c.keys.data() + r * p.top_k,
                   c.scores.data() + r * p.top_k);
    }
  }
}

// Each row's lse over all ranks' shards from their (m, Σ exp(s - m)):
// lse = M + log Σ_ranks sum · exp(m - M), M the largest m; -inf for a row
// that sees no key. One rank: top + log(sum), as one process computes it.
std::vector<double> global_lse(MPI_Comm comm, const std::vector<double>& m,
                               const std::vector<double>& sum) {
  const int n = static_cast<int>(m.size());
  std::vector<double> big(m), total(m.size());
  RA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, big.data(), n, MPI_DOUBLE, MPI_MAX, comm));
  for (int r = 0; r < n; ++r)
    total[r] = std::isfinite(m[r]) ? sum[r] * std::exp(m[r] - big[r]) : 0.0;
  RA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, total.data(), n, MPI_DOUBLE, MPI_SUM, comm));
  for (int r = 0; r < n; ++r)
    big[r] = std::isfinite(big[r]) ? big[r] + std::log(total[r])
                                   : -std::numeric_limits<double>::infinity();
  return big;
}

// Pass 2, full rows: w (R, keys) = exp(s - lse) on the shard.
void shard_weights(const PlaneWork& p, std::int64_t R, const std::vector<double>& lse,
                   std::vector<float>& w) {
  w.assign(static_cast<std::size_t>(R * p.keys), 0.0f);
#pragma omp parallel
  {
    std::vector<double> s(static_cast<std::size_t>(p.keys));
#pragma omp for schedule(dynamic)
    for (std::int64_t r = 0; r < R; ++r) {
      const double l = lse[static_cast<std::size_t>(r)];
      if (!std::isfinite(l)) continue;
      row_scores(p, r, s);
      for (std::int64_t j = 0; j < p.keys; ++j)
        w[static_cast<std::size_t>(r * p.keys + j)] =
            static_cast<float>(std::exp(s[static_cast<std::size_t>(j)] - l));
    }
  }
}

// Rank 0 receives every rank's (R, keys_r) block of full rows into its
// columns of w (R, N_k); the others send theirs.
void gather_rows(MPI_Comm comm, const Partition& shards, std::int64_t R,
                 const std::vector<float>& mine, std::vector<float>& w) {
  int rank = 0, size = 1;
  RA_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  RA_MPI_CHECK(MPI_Comm_size(comm, &size));
  const std::int64_t N = shards.tokens();
  if (rank != 0) {
    RA_MPI_CHECK(MPI_Send(mine.data(), static_cast<int>(mine.size()), MPI_FLOAT, 0, 0, comm));
    return;
  }
  w.assign(static_cast<std::size_t>(R * N), 0.0f);
  for (std::int64_t r = 0; r < R; ++r)
    std::copy_n(mine.data() + r * shards.local_size(0), shards.local_size(0), w.data() + r * N);
  for (int src = 1; src < size; ++src) {
    const std::int64_t keys = shards.local_size(src);
    MPI_Datatype block;  // R rows of `keys` floats, N apart
    RA_MPI_CHECK(MPI_Type_vector(static_cast<int>(R), static_cast<int>(keys), static_cast<int>(N),
                                 MPI_FLOAT, &block));
    RA_MPI_CHECK(MPI_Type_commit(&block));
    const int rc = MPI_Recv(w.data() + shards.global_position(src, 0), 1, block, src, 0, comm,
                            MPI_STATUS_IGNORE);
    MPI_Type_free(&block);
    RA_MPI_CHECK(rc);
  }
}

// Rank 0 merges every rank's K candidates per row into the row's top K and
// their weights exp(s - lse).
void merge_top_k(MPI_Comm comm, std::int64_t R, std::int64_t K, const Candidates& mine,
                 const std::vector<double>& lse, std::vector<std::int64_t>& keys,
                 std::vector<float>& w) {
  int rank = 0, size = 1;
  RA_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  RA_MPI_CHECK(MPI_Comm_size(comm, &size));
  const auto n = static_cast<std::size_t>(R * K);
  std::vector<std::int64_t> all_keys(rank == 0 ? n * static_cast<std::size_t>(size) : 0);
  std::vector<double> all_scores(all_keys.size());
  RA_MPI_CHECK(MPI_Gather(mine.keys.data(), static_cast<int>(n), MPI_INT64_T, all_keys.data(),
                          static_cast<int>(n), MPI_INT64_T, 0, comm));
  RA_MPI_CHECK(MPI_Gather(mine.scores.data(), static_cast<int>(n), MPI_DOUBLE, all_scores.data(),
                          static_cast<int>(n), MPI_DOUBLE, 0, comm));
  if (rank != 0) return;
  keys.assign(n, -1);
  w.assign(n, 0.0f);
  std::vector<std::int64_t> row_keys(static_cast<std::size_t>(size * K)), order;
  std::vector<double> row_scores_(row_keys.size()), best(static_cast<std::size_t>(K));
  for (std::int64_t r = 0; r < R; ++r) {
    for (int src = 0; src < size; ++src)
      for (std::int64_t t = 0; t < K; ++t) {
        const std::size_t from = static_cast<std::size_t>(src) * n + r * K + t;
        row_keys[src * K + t] = all_keys[from];
        row_scores_[src * K + t] = all_scores[from];
      }
    top_scores(row_scores_.data(), row_keys.data(), size * K, K, order, keys.data() + r * K,
               best.data());
    const double l = lse[static_cast<std::size_t>(r)];
    for (std::int64_t t = 0; t < K; ++t)
      if (keys[r * K + t] >= 0)
        w[r * K + t] = static_cast<float>(std::exp(best[static_cast<std::size_t>(t)] - l));
  }
}

// Rows `rows` of plane (b, h) of `name`, D values each, as f32, read in the
// stored type.
void read_f32_rows(H5RowReader& r, const std::string& name, std::int64_t b, std::int64_t h,
                   const std::vector<std::int64_t>& rows, std::int64_t D, DType stored,
                   std::vector<float>& out) {
  const auto count = rows.size() * static_cast<std::size_t>(D);
  out.resize(count);
  std::vector<unsigned char> raw(stored == DType::f32 ? 0 : count * dtype_size(stored));
  r.read_rows(name, b, h, rows, stored,
              stored == DType::f32 ? static_cast<void*>(out.data()) : raw.data());
  if (stored != DType::f32) load_f32(raw.data(), stored, out.data(), count);
}

// The rows of --rows: its indices and ranges (parse_index_spec), and its
// token=ID items, every position whose token id is ID in some batch row
// (ids: (B, N), the input's token ids; needed only with such items).
std::vector<std::int64_t> select_rows(const std::string& spec, std::int64_t B, std::int64_t N,
                                      const std::vector<std::int64_t>& ids) {
  constexpr std::string_view kToken = "token=";
  std::string indices;
  std::vector<std::int64_t> wanted;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.rfind(kToken, 0) != 0) {
      indices += (indices.empty() ? "" : ",") + item;
      continue;
    }
    std::int64_t id = 0;
    RA_CHECK(parse_int(item.substr(kToken.size()), id), usage, "weights --rows: '", item,
             "' is not token=ID with an integer ID");
    wanted.push_back(id);
  }
  std::vector<std::int64_t> rows = indices.empty() && !wanted.empty()
                                       ? std::vector<std::int64_t>{}
                                       : parse_index_spec(indices, N, "weights --rows");
  for (const std::int64_t id : wanted) {
    const std::size_t before = rows.size();
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t b = 0; b < B; ++b)
        if (ids[static_cast<std::size_t>(b * N + n)] == id) {
          rows.push_back(n);
          break;
        }
    RA_CHECK(rows.size() > before, usage, "weights --rows: token id ", id,
             " is nowhere in the input's token ids");
  }
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  return rows;
}

// Each row's token id per batch row, (B, R), from ids (B, N).
std::vector<std::int64_t> row_tokens(const std::vector<std::int64_t>& ids, std::int64_t B,
                                     std::int64_t N, const std::vector<std::int64_t>& rows) {
  std::vector<std::int64_t> out;
  out.reserve(static_cast<std::size_t>(B) * rows.size());
  for (std::int64_t b = 0; b < B; ++b)
    for (const std::int64_t n : rows) out.push_back(ids[static_cast<std::size_t>(b * N + n)]);
  return out;
}

// The file's layout and attributes.
WeightsFileSpec weights_file_spec(const WeightsRequest& req, const AttnShape& s,
                                  const std::vector<std::int64_t>& rows,
                                  const std::vector<std::int64_t>& heads, const RunFacts& run,
                                  const Documents& docs, std::vector<std::int64_t> tokens) {
  WeightsFileSpec spec;
  spec.path = req.to;
  spec.overwrite = req.overwrite;
  spec.batch = s.batch;
  spec.keys = s.tokens_kv;
  spec.top_k = req.top_k;
  spec.rows = rows;
  spec.heads = heads;
  spec.row_tokens = std::move(tokens);
  spec.attributes = {{"generator", std::string("ringattn weights")},
                     {"input", req.input},
                     {"output", req.output},
                     {"causal", std::int64_t{run.causal}},
                     {"window", run.window.text()},
                     {"documents", docs.count()},
                     {"scale", static_cast<double>(run.scale)},
                     {"top_k", req.top_k}};
  return spec;
}

// Rank 0's checks of a plane before it is written: rows that see no key,
// full rows' sums (keys > 0: w is (R, keys)), the run's lse against the
// exact one.
void check_plane(std::int64_t R, std::int64_t keys, const std::vector<float>& w,
                 const std::vector<double>& lse, const float* run_lse, WeightsReport& rep) {
  for (std::int64_t r = 0; r < R; ++r) {
    const double l = lse[static_cast<std::size_t>(r)];
    if (!std::isfinite(l)) {
      ++rep.rows_without_keys;
      continue;
    }
    if (keys > 0) {
      double total = 0;
      for (std::int64_t j = 0; j < keys; ++j) total += w[static_cast<std::size_t>(r * keys + j)];
      rep.max_sum_error = std::max(rep.max_sum_error, std::abs(total - 1.0));
    }
    if (run_lse)
      rep.max_lse_difference =
          std::max(rep.max_lse_difference, std::abs(static_cast<double>(run_lse[r]) - l));
  }
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

namespace {

// One request's steps on this rank: check (every rank alike; rank 0 makes
// the file), then per plane read, sum, combine and write, then commit.
class WeightsRun {
 public:
  WeightsRun(MPI_Comm comm, const WeightsRequest& req) : comm_(comm), req_(req) {
    RA_MPI_CHECK(MPI_Comm_rank(comm, &rank_));
    RA_MPI_CHECK(MPI_Comm_size(comm, &size_));
    agree(comm_, [&] { check(); });
    shard();
    agree(comm_, [&] {
      input_.emplace(req_.input);
      if (rank_ == 0 && run_.has_lse) output_.emplace(req_.output);
    });
    rep_.shape = in_.shape;
    rep_.rows = static_cast<std::int64_t>(rows_.size());
    rep_.heads = static_cast<std::int64_t>(heads_.size());
    rep_.has_run_lse = run_.has_lse;
  }

  WeightsReport all_planes() {
    for (std::int64_t b = 0; b < in_.shape.batch; ++b)
      for (std::size_t j = 0; j < heads_.size(); ++j) plane(b, j);
    agree(comm_, [&] {
      if (rank_ == 0) file_->commit();
    });
    rep_.seconds = wall_.seconds();
    return rep_;
  }

 private:
  void check() {
    RA_CHECK(req_.top_k >= 0, usage, "weights --top-k: must be >= 0, got ", req_.top_k);
    const H5FileDesc od =
        describe_h5_file(req_.output, H5DescribeWhat{}, "output file '" + req_.output + "'");
    run_ = read_facts(od);
    in_ = inspect_input(MPI_COMM_SELF, req_.input, run_.names);
    docs_ = read_input_documents(in_);
    check_shapes(od, run_, in_.shape);
    const AttnShape& s = in_.shape;
    // Token ids: for token=ID rows, and for the file's row_tokens when the
    // input has them in the converters' form (else the file goes without).
    std::vector<std::int64_t> ids;
    const bool by_token = req_.rows.find("token=") != std::string::npos;
    if (by_token || in_.tokens.object == H5Object::dataset) try {
        ids = read_input_tokens(in_);
      } catch (const Error&) {
        if (by_token) throw;
      }
    rows_ = select_rows(req_.rows, s.batch, s.tokens_q, ids);
    heads_ = parse_index_spec(req_.heads, s.heads_q, "weights --heads");
    const auto R = static_cast<double>(rows_.size());
    RA_CHECK(req_.top_k > 0 || R * static_cast<double>(s.tokens_kv) * 4 <= kMaxPlaneBytes, usage,
             "weights: ", rows_.size(), " full rows of ", s.tokens_kv,
             " keys need more than 1 GiB per head; ask for fewer rows or --top-k K");
    RA_CHECK(R * static_cast<double>(req_.top_k) <= std::numeric_limits<int>::max(), usage,
             "weights: ", rows_.size(), " rows of top ", req_.top_k,
             " keys are too many for one request; ask for fewer rows");
    RA_CHECK(s.tokens_kv >= size_, usage, "weights: ", s.tokens_kv, " keys cannot be split among ",
             size_, " ranks; run it on at most ", s.tokens_kv);
    if (rank_ == 0)
      file_.emplace(weights_file_spec(
          req_, s, rows_, heads_, run_, docs_,
          ids.empty() ? std::vector<std::int64_t>{} : row_tokens(ids, s.batch, s.tokens_q, rows_)));
  }

  // This rank's keys, a contiguous shard of N_k, and the coordinates the
  // masks compare.
  void shard() {
    shards_.emplace(PartitionKind::contiguous, in_.shape.tokens_kv, size_);
    const std::int64_t first = shards_->global_position(rank_, 0);
    const std::int64_t count = shards_->local_size(rank_);
    shard_keys_.resize(static_cast<std::size_t>(count));
    std::iota(shard_keys_.begin(), shard_keys_.end(), first);
    const Positions kp = docs_.k_coordinates(Positions::contiguous(first, count));
    k_coord_.resize(static_cast<std::size_t>(kp.size()));
    kp.fill(0, kp.size(), k_coord_.data());
    q_coord_ = docs_.q_coordinates(Positions::of_rows(rows_.data(), rows_.size()));
  }

  // Plane (b, heads_[j]): every rank's shard sums, then rank 0 writes.
  void plane(std::int64_t b, std::size_t j) {
    const AttnShape& s = in_.shape;
    const auto R = static_cast<std::int64_t>(rows_.size());
    const std::int64_t h = heads_[j], hk = h / (s.heads_q / s.heads_kv), D = s.head_dim;
    agree(comm_, [&] {
      if (hk != loaded_) read_f32_rows(*input_, run_.names.k, b, hk, shard_keys_, D, in_.dtype, k_);
      loaded_ = hk;
      read_f32_rows(*input_, run_.names.q, b, h, rows_, D, in_.dtype, q_);
      if (output_) {
        run_lse_.resize(static_cast<std::size_t>(R));
        output_->read_rows("lse", b, h, rows_, DType::f32, run_lse_.data());
      }
    });
    const PlaneWork p{k_.data(),  shard_keys_.data(),
                      q_.data(),  static_cast<std::int64_t>(shard_keys_.size()),
                      D,          req_.top_k,
                      run_.scale, Visibility::of(run_.causal, docs_.window(run_.window)),
                      &k_coord_,  &q_coord_};
    shard_sums(p, R, m_, sum_, cand_);
    const std::vector<double> lse = global_lse(comm_, m_, sum_);
    if (req_.top_k > 0) {
      merge_top_k(comm_, R, req_.top_k, cand_, lse, keys_, w_);
    } else {
      shard_weights(p, R, lse, mine_);
      gather_rows(comm_, *shards_, R, mine_, w_);
    }
    agree(comm_, [&] {
      if (rank_ != 0) return;
      check_plane(R, req_.top_k > 0 ? 0 : s.tokens_kv, w_, lse, output_ ? run_lse_.data() : nullptr,
                  rep_);
      file_->write_plane(b, static_cast<std::int64_t>(j), w_.data(),
                         req_.top_k > 0 ? keys_.data() : nullptr, lse.data());
    });
  }

  MPI_Comm comm_;
  const WeightsRequest& req_;
  Timer wall_;
  int rank_ = 0, size_ = 1;
  RunFacts run_;
  InputInfo in_;
  Documents docs_;
  std::vector<std::int64_t> rows_, heads_;
  std::optional<WeightsFile> file_;  // rank 0's
  std::optional<Partition> shards_;
  std::vector<std::int64_t> shard_keys_, k_coord_;  // this rank's keys, their mask coordinates
  Positions q_coord_;
  std::optional<H5RowReader> input_, output_;  // output_: rank 0's, for the run's lse
  std::int64_t loaded_ = -1;                   // the K/V head whose K shard is in k_
  std::vector<float> k_, q_, run_lse_, mine_, w_;
  std::vector<std::int64_t> keys_;
  std::vector<double> m_, sum_;
  Candidates cand_;
  WeightsReport rep_;
};

}  // namespace

WeightsReport write_attention_weights(MPI_Comm comm, const WeightsRequest& req) {
  return WeightsRun(comm, req).all_planes();
}

}  // namespace ringattn
