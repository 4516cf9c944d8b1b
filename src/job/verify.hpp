// Verifying a finished run: recompute rows of its output in float64
// (kernel/reference.hpp) and judge whether `o` (and `lse`, when written)
// agree within a tolerance. The run's own attributes say what to recompute
// (causal, scale, compute, dataset names), so a result can be checked long
// after, by someone who did not launch it.
//
// A backward run's output (gradients = 1) is checked for its gradients too:
//   dq  on the sampled query rows, exact in float64: the forward reference's
//       o and lse of each row, then D = dO·o and, over the keys the row sees,
//       P = exp(s - lse), dS = scale·P·(dO·v - D), dq = Σ dS·k (what
//       reference_attention_backward computes, without its dk and dv of
//       N_k·D doubles per call, which long sequences cannot afford per thread).
//   dk, dv  on sampled key rows (b, kv head, j), drawn as query rows are,
//       GIVEN THE RUN'S o AND lse: over every query row i of the group's
//       heads that sees key j, P = exp(scale·q_i·k_j - lse_i) with the
//       output's lse and D_i = dO_i·o_i with the output's o (an exact lse of
//       every row would cost a whole forward); dk_j = Σ dS·q_i, dv_j = Σ
//       P·dO_i. o and lse are checked themselves, on the query rows.
// The upstream gradient dO is the input's dataset named by do_dataset.
// Each gradient's error is max |x - ref| over the checked elements against
// max(max |ref|, kernel/reference.hpp's gradient_error_floor over what was
// read): a gradient can be exactly 0.
//
// All rows are checked when there are few (B·H·N <= 4096) or when asked
// (rows = 0); otherwise `rows` rows drawn uniformly over (b, h, i), the same
// ones for the same seed; key rows alike over (b, kv head, j) (all when
// B·H_kv·N_k <= 4096). Only what
// those rows need is read: the sampled q, o and lse rows (and dO, dq), the
// whole K/V of the heads involved, one (b, kv head) plane at a time, and for
// sampled key rows every q, dO, o and lse row of their group's query heads,
// a block of rows at a time. One process verifies (no MPI); cli/verify.cpp
// runs it on rank 0 and prints the report.
//
// Includes: <cstdint>, <memory>, <optional>, <string>, core/dtype.hpp, core/shape.hpp,
// core/visibility.hpp (Window).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "core/dtype.hpp"
#include "core/shape.hpp"
#include "core/visibility.hpp"

namespace ringattn {

struct VerifyRequest {
  std::string input, output;
  std::int64_t rows = 256;  // 0: all
  std::uint64_t seed = 1;
  std::optional<double> tolerance;  // unset: by the run's types (see VerifyReport::why)
};

// The largest error over the checked rows, and where it was.
struct WorstError {
  double max_abs = 0;
  double scale = 0;  // max |ref|
  double floor = 0;  // the error scale's floor (gradients: gradient_error_floor; o: 0)
  bool any = false;
  std::int64_t b = 0, h = 0, i = 0, d = 0;  // dk, dv: h is the kv head, i the key row
  double value = 0, ref = 0;

  double rel() const;  // max_abs / max(scale, floor)
};

struct VerifyReport {
  // What the output's attributes say the run computed.
  bool causal = false;
  Window window;
  std::int64_t documents = 1;  // packed sequences (1: a dense input)
  float scale = 0;
  std::string compute;  // f32 or bf16
  DType o_dtype = DType::f32;
  bool has_lse = false;
  AttnShape shape;
  bool input_changed = false;  // size or mtime differ from what the run recorded
  // The rows checked.
  bool all_rows = false;
  std::int64_t rows_checked = 0, rows_total = 0;
  // The verdict.
  WorstError o, lse;
  double tolerance = 0, lse_tolerance = 0;
  std::string why;       // where the tolerance came from
  double lse_limit = 0;  // lse_tolerance x max(1, max |lse ref|)
  bool o_ok = false, lse_ok = true;
  // Backward runs (gradients = 1): dq on the query rows above, dk and dv on
  // sampled key rows, given the run's o and lse.
  bool gradients = false;
  std::string do_name;  // the input's dO (the output's do_dataset)
  DType do_dtype = DType::f32;
  bool all_key_rows = false;
  std::int64_t key_rows_checked = 0, key_rows_total = 0;
  WorstError dq, dk, dv;
  double grad_tolerance = 0;
  std::string grad_why;  // where grad_tolerance came from
  bool dq_ok = true, dk_ok = true, dv_ok = true;
  double seconds = 0;
  int threads = 1;

  bool ok() const { return o_ok && lse_ok && dq_ok && dk_ok && dv_ok; }
};

// One verification in two steps, so a caller can say what is checked
// before the (long) check: the constructor describes both files, reads the
// run's facts and chooses the rows (the report's first part); check()
// recomputes them and fills the verdict. Both throw Error(input) when the
// output is not a complete output of ringattn run for this input (a
// backward output lacking lse, dq, dk or dv, or shaped wrongly; an input
// lacking its dO), Error(io) when reading fails.
class Verifier {
 public:
  explicit Verifier(const VerifyRequest& req);
  ~Verifier();
  Verifier(const Verifier&) = delete;
  Verifier& operator=(const Verifier&) = delete;

  const VerifyReport& report() const { return report_; }
  const VerifyReport& check();

 private:
  struct Plan;  // the run's facts, the input, the rows (verify.cpp)
  VerifyRequest req_;
  std::unique_ptr<Plan> plan_;
  VerifyReport report_;
};

}  // namespace ringattn
