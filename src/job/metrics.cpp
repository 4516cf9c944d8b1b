// The metrics file (see metrics.hpp).
#include "job/metrics.hpp"

#include <hdf5.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "comm/agree.hpp"
#include "core/cpu.hpp"
#include "core/error.hpp"
#include "core/version.hpp"
#include "io/chunk_state.hpp"
#include "io/file_identity.hpp"
#include "io/output_file.hpp"
#include "io/writer_lock.hpp"

namespace ringattn {

void check_metrics_target(MPI_Comm comm, const JobConfig& cfg, const InputInfo& input) {
  int rank = 0;
  RA_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  agree(comm, [&] {
    if (rank != 0 || cfg.metrics.empty()) return;
    const std::string ctx = "metrics file '" + cfg.metrics + "'";
    (void)check_new_file_target(cfg.metrics, cfg.overwrite, cfg.input, ctx);
    const std::string mine = future_path(cfg.metrics);
    for (const std::string& own : {cfg.output, partial_output_path(cfg.output),
                                   writer_lock_path(cfg.output), chunk_state_path(cfg.output)})
      RA_CHECK(mine != future_path(own), usage, ctx, ": is ",
               own == cfg.output ? "the output file" : "a file the run keeps beside the output",
               " ('", own, "'); choose another metrics path");
    for (const FileIdentity& l : input.linked)
      RA_CHECK(
          ::access(cfg.metrics.c_str(), F_OK) != 0 || !same_file(file_identity(cfg.metrics), l),
          usage, ctx, ": is '", l.path, "', which the input links to");
  });
}

void write_metrics(const JobConfig& cfg, const JobReport& r) {
  using nlohmann::json;
  json ranks = json::array();
  for (std::size_t i = 0; i < r.per_rank.size(); ++i) {
    const RankMetrics& m = r.per_rank[i];
    ranks.push_back({{"rank", i},
                     {"host", std::string(m.host)},
                     {"cpus", std::string(m.cpus)},
                     {"wall_s", m.wall_s},
                     {"compute_s", m.compute_s},
                     {"comm_wait_s", m.comm_wait_s},
                     {"io_read_s", m.io_read_s},
                     {"io_write_s", m.io_write_s},
                     {"flops", m.flops},
                     {"gflops", m.compute_s > 0 ? m.flops / m.compute_s / 1e9 : 0.0},
                     {"bytes_sent", m.bytes_sent},
                     {"bytes_read", m.bytes_read},
                     {"bytes_written", m.bytes_written},
                     {"peak_rss_mb", m.peak_rss_mb}});
  }
  char mpi_version[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int len = 0;
  MPI_Get_library_version(mpi_version, &len);
  std::string mpi_first_line(mpi_version);
  mpi_first_line = mpi_first_line.substr(0, mpi_first_line.find_first_of(",\n"));
  unsigned h5maj = 0, h5min = 0, h5rel = 0;
  H5get_libversion(&h5maj, &h5min, &h5rel);
  std::vector<std::string> hosts;
  for (const auto& m : r.per_rank)
    if (std::find(hosts.begin(), hosts.end(), m.host) == hosts.end()) hosts.emplace_back(m.host);
  double flops = 0;
  for (const auto& m : r.per_rank) flops += m.flops;
  const char* slurm = std::getenv("SLURM_JOB_ID");
  const json j = {
      {"context",
       {{"version", kVersion},
        {"git_commit", kGitCommit},
        {"hosts", hosts},
        {"ranks", r.ranks},
        {"threads_per_rank", r.threads},
        {"vector_isa", vector_isa()},
        {"mpi", mpi_first_line},
        {"hdf5", std::to_string(h5maj) + "." + std::to_string(h5min) + "." + std::to_string(h5rel)},
        {"slurm_job_id", slurm ? json(slurm) : json(nullptr)}}},
      {"problem",
       {{"batch", r.input.shape.batch},
        {"heads", r.input.shape.heads_q},
        {"kv_heads", r.input.shape.heads_kv},
        {"n", r.input.shape.tokens_q},
        {"n_kv", r.input.shape.tokens_kv},
        {"d", r.input.shape.head_dim},
        {"dtype", dtype_name(r.input.dtype)},
        {"causal", cfg.causal},
        {"partition", partition_name(r.partition)},
        {"chunks", r.chunks}}},
      {"config", json::parse(config_json(cfg, r.documents.is_packed()))},
      {"wall_s", r.wall_s},
      {"gflops", r.wall_s > 0 ? flops / r.wall_s / 1e9 : 0.0},
      {"ranks", ranks},
  };
  const std::string ctx = "metrics file '" + cfg.metrics + "'";
  const std::string temp = check_new_file_target(cfg.metrics, cfg.overwrite, cfg.input, ctx);
  {
    std::ofstream f(temp, std::ios::out | std::ios::trunc);
    RA_CHECK(f.good(), io, ctx, ": cannot write '", temp, "': ", std::strerror(errno));
    f << j.dump(2) << "\n";
    f.close();
    if (!f) {
      const int err = errno;
      std::remove(temp.c_str());
      RA_FAIL(io, ctx, ": writing '", temp, "' failed: ", std::strerror(err));
    }
  }
  try {
    rename_into_place(temp, cfg.metrics, cfg.overwrite, "metrics file");
  } catch (...) {
    std::remove(temp.c_str());
    throw;
  }
}

}  // namespace ringattn
