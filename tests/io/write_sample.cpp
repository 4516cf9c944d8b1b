// The C++ half of check_h5py.py: writes an output file through OutputFile
// for h5py to read back.
//
//   io_write_sample OUT.h5          o [2, 3, 37, 4] f32 with
//                                   o[b, h, t, d] = ((b * 10 + h) * 100 + t) * 10 + d,
//                                   lse [2, 3, 37] = -t - 0.5
//   io_write_sample OUT.h5 IN.h5    o = IN's q read through InputFile as f32,
//                                   lse[b, h, t] = t (a file h5py wrote, round trip)
//   io_write_sample --gradients OUT.h5
//                                   o and lse as in the first form, plus
//                                   dq [2, 3, 37, 4] = o + 0.25,
//                                   dk [2, 1, 23, 4] with dk[b, h, t, d] = -(((b * 10 + h) * 100 +
//                                   t) * 10 + d), dv = dk - 0.5 (K/V partition contiguous)
//
// Zigzag partition over all ranks; root attributes version, config, ranks,
// partition, scale. Run under mpiexec.
#include <mpi.h>

#include <cstdio>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "io/input_file.hpp"
#include "io/output_file.hpp"

namespace {

using namespace ringattn;

void run(int argc, char** argv, int rank, int size) {
  const bool gradients = argc == 3 && std::string(argv[1]) == "--gradients";
  if (gradients) {
    --argc;
    ++argv;
  }
  RA_CHECK(argc == 2 || argc == 3, usage,
           "usage: io_write_sample OUT.h5 [IN.h5] | io_write_sample --gradients OUT.h5");
  OutputSpec spec;
  spec.path = argv[1];
  spec.with_lse = true;
  spec.with_gradients = gradients;
  spec.H_kv = 1;
  spec.N_kv = 23;
  std::vector<float> o, lse;  // (B, H, rows, D) and (B, H, rows)
  if (argc == 3) {
    InputFile in = InputFile::open(MPI_COMM_WORLD, argv[2]);
    const InputInfo& info = in.info();
    spec.B = info.shape.batch;
    spec.H = info.shape.heads_q;
    spec.N = info.shape.tokens_q;
    spec.D = info.shape.head_dim;
    const Partition part(PartitionKind::zigzag, spec.N, size);
    const BatchHeadRange all{0, spec.B, 0, spec.H};
    o.resize(in.shard_elements(part, all));
    in.read_shard(InputTensor::q, part, all, DType::f32, o.data());
    const Positions pos = part.positions(rank);
    for (std::int64_t p = 0; p < spec.B * spec.H; ++p)
      for (std::int64_t i = 0; i < pos.size(); ++i) lse.push_back(static_cast<float>(pos[i]));
  } else {
    spec.B = 2;
    spec.H = 3;
    spec.N = 37;
    spec.D = 4;
    const Positions pos = Partition(PartitionKind::zigzag, spec.N, size).positions(rank);
    for (std::int64_t b = 0; b < spec.B; ++b)
      for (std::int64_t h = 0; h < spec.H; ++h)
        for (std::int64_t i = 0; i < pos.size(); ++i) {
          for (std::int64_t d = 0; d < spec.D; ++d)
            o.push_back(static_cast<float>(((b * 10 + h) * 100 + pos[i]) * 10 + d));
          lse.push_back(-static_cast<float>(pos[i]) - 0.5f);
        }
  }
  const Partition part(PartitionKind::zigzag, spec.N, size);
  const BatchHeadRange all{0, spec.B, 0, spec.H};
  OutputFile out = OutputFile::create(MPI_COMM_WORLD, spec);
  out.write_o(part, all, DType::f32, o.data());
  out.write_lse(part, all, lse.data());
  if (gradients) {
    std::vector<float> dq(o), dk, dv;
    for (float& x : dq) x += 0.25f;
    const Partition kv_part(PartitionKind::contiguous, spec.N_kv, size);
    const Positions pos = kv_part.positions(rank);
    for (std::int64_t b = 0; b < spec.B; ++b)
      for (std::int64_t h = 0; h < spec.H_kv; ++h)
        for (std::int64_t i = 0; i < pos.size(); ++i)
          for (std::int64_t d = 0; d < spec.D; ++d) {
            dk.push_back(-static_cast<float>(((b * 10 + h) * 100 + pos[i]) * 10 + d));
            dv.push_back(dk.back() - 0.5f);
          }
    out.write_dq(part, all, dq.data());
    out.write_dk(kv_part, {0, spec.B, 0, spec.H_kv}, dk.data());
    out.write_dv(kv_part, {0, spec.B, 0, spec.H_kv}, dv.data());
  }
  out.set_attributes({{"version", std::string("io-sample")},
                      {"config", std::string(R"({"causal": false, "block": 37})")},
                      {"ranks", std::int64_t{size}},
                      {"partition", std::string("zigzag")},
                      {"scale", 0.5}});
  out.commit();
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1, rc = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  try {
    run(argc, argv, rank, size);
  } catch (const ringattn::Error& e) {
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    rc = 1;
  }
  MPI_Finalize();
  return rc;
}
