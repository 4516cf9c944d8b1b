// `ringattn gen`: writes a seeded synthetic input (q, k, v, and with
// --backward the upstream gradient do) that `run` reads,
// for smoke tests, scaling studies and bug reports: the seed alone rebuilds
// any slice of it (io/synthetic.hpp). One process writes; under mpirun the
// other ranks wait.
//
// Includes: cli/commands.hpp (ExitCode, CLI11), cli/mpi_session.hpp,
// core/timer.hpp (Timer),
// io/synthetic.hpp (the writer).
#include <cstdio>
#include <limits>
#include <memory>
#include <string>

#include "cli/commands.hpp"
#include "cli/mpi_session.hpp"
#include "cli/option_checks.hpp"
#include "core/documents.hpp"
#include "core/error.hpp"
#include "core/shape.hpp"
#include "core/timer.hpp"
#include "io/synthetic.hpp"

namespace ringattn::cli {
namespace {

struct GenFlags {
  SyntheticSpec spec;
  std::int64_t kv_heads = 0, n_kv = 0;  // 0: like --heads, --n
  std::string dtype = "f32";
};

int gen(const GenFlags& f) {
  SyntheticSpec s = f.spec;
  s.shape.heads_kv = f.kv_heads > 0 ? f.kv_heads : s.shape.heads_q;
  s.shape.tokens_kv = f.n_kv > 0 ? f.n_kv : s.shape.tokens_q;
  s.dtype = parse_dtype(f.dtype);
  if (s.gzip > 0) s.chunked = true;
  Timer t;
  const std::int64_t bytes = write_synthetic_input(s);
  const char* layout = s.gzip > 0 ? "chunked, gzip" : s.chunked ? "chunked" : "contiguous";
  std::printf(
      "ringattn: wrote %s: q%s [%lld, %lld, %lld, %lld], k and v [%lld, %lld, %lld, %lld], %s, "
      "%s%s, seed %llu, amplitude %g, %.1f MiB in %.2f s\n",
      s.path.c_str(), s.with_do ? " and do" : "", static_cast<long long>(s.shape.batch),
      static_cast<long long>(s.shape.heads_q), static_cast<long long>(s.shape.tokens_q),
      static_cast<long long>(s.shape.head_dim), static_cast<long long>(s.shape.batch),
      static_cast<long long>(s.shape.heads_kv), static_cast<long long>(s.shape.tokens_kv),
      static_cast<long long>(s.shape.head_dim), dtype_name(s.dtype), layout,
      s.gzip > 0 ? (" " + std::to_string(s.gzip)).c_str() : "",
      static_cast<unsigned long long>(s.seed), static_cast<double>(s.amplitude),
      static_cast<double>(bytes) / (1 << 20), t.seconds());
  return kOk;
}

}  // namespace

std::function<int(MpiSession&)> add_gen(CLI::App& app) {
  auto f = std::make_shared<GenFlags>();
  SyntheticSpec& s = f->spec;
  CLI::App* c = app.add_subcommand(
      "gen",
      "Write a seeded synthetic input for `run`: q [B, H, N, D], k and v [B, HK, NK, D], with "
      "--backward also do [B, H, N, D]. Element i of the flattened tensor is amplitude * "
      "uniform[-1, 1)(seed, i) (k: seed + 1, v: seed + 2, do: seed + 3), so any slice can be "
      "rebuilt from the seed. Written one (batch, head) plane at a time "
      "under a temporary name, renamed when complete. One process writes (under mpirun, rank 0).");
  c->add_option("--output,-o", s.path, "File to write")->required();
  c->add_option("--batch", s.shape.batch, "B: batch size")
      ->capture_default_str()
      ->check(positive());
  c->add_option("--heads", s.shape.heads_q, "H: query heads")
      ->capture_default_str()
      ->check(positive());
  c->add_option("--kv-heads", f->kv_heads, "HK: key/value heads, dividing H [default: H]")
      ->check(positive());
  c->add_option("--n", s.shape.tokens_q, "N: query tokens")
      ->capture_default_str()
      ->check(positive());
  c->add_option("--n-kv", f->n_kv, "NK: key/value tokens [default: N]")->check(positive());
  c->add_option("--d", s.shape.head_dim, "D: head dim (1.." + std::to_string(kMaxHeadDim) + ")")
      ->capture_default_str()
      ->check(integer_in(1, kMaxHeadDim));
  add_choice(*c, "--dtype", f->dtype, {"f32", "f16"},
             "Element type (f16: IEEE half, as numpy.float16)");
  c->add_option("--seed", s.seed, "Seed of q (k: seed + 1, v: seed + 2, do: seed + 3)")
      ->capture_default_str()
      ->check(integer_in(0, std::numeric_limits<std::int64_t>::max()));
  c->add_option("--amplitude", s.amplitude, "Values lie in [-amplitude, amplitude)")
      ->capture_default_str()
      ->check(positive());
  c->add_flag("--chunked", s.chunked, "Chunked storage, chunks (1, 1, min(N, 4096), D)");
  c->add_option("--gzip", s.gzip, "Deflate level 1..9 (implies --chunked)")
      ->check(integer_in(1, 9));
  c->add_option("--docs", s.docs,
                "Packed sequences: lengths L1,L2,... summing to N, or longtail:S (S heavy-tailed "
                "lengths); writes cu_seqlens (cu_seqlens_q and cu_seqlens_k when NK != N), B = 1")
      ->type_name(kPackedOffsetsMetavar);
  c->add_flag("--backward", s.with_do,
              "Also write do [B, H, N, D] (q's type, seed + 3): the upstream gradient that "
              "`run --backward` reads");
  c->add_flag("--overwrite", s.overwrite, "Replace an existing file");
  return [f](MpiSession& mpi) { return on_rank0(mpi, [&] { return gen(*f); }); };
}

}  // namespace ringattn::cli
