// `ringattn weights --input IN --output OUT --rows SPEC --to W.h5`: binds
// the flags to a WeightsRequest, runs the engine (job/weights.hpp) on every
// rank (the keys split among them) and prints, on rank 0, what it wrote.
#include <cstdio>
#include <memory>

#include "cli/commands.hpp"
#include "cli/mpi_session.hpp"
#include "cli/option_checks.hpp"
#include "core/error.hpp"
#include "job/weights.hpp"

namespace ringattn::cli {
namespace {

int weights(const MpiSession& mpi, const WeightsRequest& req) {
  const WeightsReport r = write_attention_weights(MPI_COMM_WORLD, req);
  if (mpi.rank() != 0) return kOk;
  const AttnShape& s = r.shape;
  std::printf("weights: wrote %s: %lld rows x %lld heads x %lld batches, %s\n", req.to.c_str(),
              static_cast<long long>(r.rows), static_cast<long long>(r.heads),
              static_cast<long long>(s.batch),
              req.top_k > 0 ? ("top " + std::to_string(req.top_k) + " keys each").c_str()
                            : ("all " + std::to_string(s.tokens_kv) + " keys each").c_str());
  if (req.top_k == 0)
    std::printf("  sums    max |sum of a row's weights - 1| = %.2e\n", r.max_sum_error);
  if (r.rows_without_keys > 0)
    std::printf("  note    %lld rows see no key (weights 0, lse -inf)\n",
                static_cast<long long>(r.rows_without_keys));
  if (r.has_run_lse)
    std::printf("  lse     max |run's lse - exact lse| = %.2e\n", r.max_lse_difference);
  std::printf("weights: done (%.2f s, %d rank%s)\n", r.seconds, mpi.size(),
              mpi.size() == 1 ? "" : "s");
  return kOk;
}

}  // namespace

std::function<int(MpiSession&)> add_weights(CLI::App& app) {
  auto req = std::make_shared<WeightsRequest>();
  CLI::App* c = app.add_subcommand(
      "weights",
      "Write the exact attention weights of selected query rows of a finished run, or each "
      "row's top K keys: for row i and the keys j it sees (the run's causal rule, window and "
      "packed sequences), w_j = exp(scale q_i.k_j - lse_i) in float64, lse the row's own "
      "log-sum-exp, so a row's weights sum to 1; the run's lse, when written, is compared. "
      "Under mpirun the ranks split the keys (each holds N_k/P of K; no N x N matrix) and rank "
      "0 writes. The file: rows [R], heads [Hs], row_tokens [B, R] (when the input has token "
      "ids), lse [B, Hs, R] and weights [B, Hs, R, N_k] f32, or with --top-k top_keys [B, Hs, "
      "R, K] int64 (largest first, -1 past a row's keys) and "
      "top_weights f32. datasets/plot_weights.py draws it.");
  c->add_option("--input,-i", req->input, "The input the run read")->required();
  c->add_option("--output,-o", req->output, "The output the run wrote")->required();
  c->add_option("--to", req->to, "The weights file to write")->required();
  c->add_option(
       "--rows", req->rows,
       "Query tokens: I, A:B (half-open), A:B:S (every S-th), ::S, or token=ID (every position "
       "whose token id, in the input's `tokens`, is ID), comma-separated")
      ->capture_default_str();
  c->add_option("--heads", req->heads, "Query heads, the same forms, or all")
      ->capture_default_str();
  c->add_option("--top-k", req->top_k, "Keep each row's K largest weights (0: every key)")
      ->capture_default_str()
      ->check(non_negative());
  c->add_flag("--overwrite", req->overwrite, "Replace an existing weights file");
  return [req](MpiSession& mpi) { return weights(mpi, *req); };
}

}  // namespace ringattn::cli
