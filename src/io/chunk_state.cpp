// The state file of a chunk stopped between ring steps (see chunk_state.hpp).
#include "io/chunk_state.hpp"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <variant>

#include "comm/agree.hpp"
#include "core/error.hpp"
#include "io/file_identity.hpp"
#include "io/h5_describe.hpp"
#include "io/h5_handle.hpp"
#include "io/shard_io.hpp"

namespace ringattn {
namespace {

constexpr int kRoot = 0;
// The state's parts: m2 and l (1, heads, N), acc (1, heads, N, D).
constexpr std::array<const char*, 3> kParts = {"m2", "l", "acc"};

float* part_of(const ChunkStateView& s, std::size_t i) {
  return i == 0 ? s.m2 : i == 1 ? s.l : s.acc;
}

std::string context(const std::string& path) {
  return "chunk state file '" + path + "'";
}

int rank_of(MPI_Comm comm) {
  int r = 0;
  RA_MPI_CHECK(MPI_Comm_rank(comm, &r));
  return r;
}

// Every part of s to or from the open file, each rank its own rows.
void transfer_parts(MPI_Comm comm, Transfer dir, const std::array<H5Handle, 3>& dsets,
                    const Partition& q_part, const ChunkStateView& s, const std::string& ctx) {
  const Positions rows = q_part.positions(rank_of(comm));
  const BatchHeadRange range{0, 1, 0, s.heads};
  for (std::size_t i = 0; i < kParts.size(); ++i)
    agree(
        comm,
        [&] {
          with_h5_context(ctx + ", dataset '" + kParts[i] + "'", [&] {
            transfer_shard(comm, dir, dsets[i].get(), H5T_NATIVE_FLOAT, rows, range, part_of(s, i));
          });
        },
        StepKind::collective);
}

// Rank 0: the steps the state file at path holds for `want`, or 0 when it
// is absent, of another run or chunk, or unreadable (losing it costs only
// the chunk's work so far, so a damaged one is not an error).
int recorded_steps(const std::string& path, const ChunkStateRecord& want, const Partition& q_part,
                   const ChunkStateView& s) {
  if (::access(path.c_str(), F_OK) != 0) return 0;
  H5FileDesc d;
  try {
    d = describe_h5_file(path, H5DescribeWhat{}, context(path));
  } catch (const Error&) {
    return 0;
  }
  const auto text = [&](const char* name) {
    const H5AttributeDesc* a = d.attribute(name);
    const auto* v = a ? std::get_if<std::string>(&a->value) : nullptr;
    return v ? *v : std::string();
  };
  const auto number = [&](const char* name) {
    const H5AttributeDesc* a = d.attribute(name);
    const auto* v = a ? std::get_if<std::int64_t>(&a->value) : nullptr;
    return v ? *v : std::int64_t{-1};
  };
  const std::int64_t steps = number("steps_done");
  if (text("resume_key") != want.resume_key || number("chunk") != want.chunk || steps < 1 ||
      steps >= q_part.ranks())
    return 0;
  const std::int64_t N = q_part.tokens();
  for (std::size_t i = 0; i < kParts.size(); ++i) {
    const H5DatasetDesc* ds = d.dataset(kParts[i]);
    const std::vector<std::int64_t> dims =
        i < 2 ? std::vector<std::int64_t>{1, s.heads, N}
              : std::vector<std::int64_t>{1, s.heads, N, s.head_dim};
    if (!ds || ds->dims != dims) return 0;
  }
  return static_cast<int>(steps);
}

}  // namespace

std::string chunk_state_path(const std::string& target) {
  return hidden_sibling(target, ".state");
}

void save_chunk_state(MPI_Comm comm, const std::string& target, const ChunkStateRecord& record,
                      const Partition& q_part, const ChunkStateView& s) {
  H5Quiet quiet;
  const bool root = rank_of(comm) == kRoot;
  const std::string path = chunk_state_path(target), temp = hidden_sibling(target, ".state.tmp");
  const std::string ctx = context(path);
  agree(comm, [&] {
    if (root) ::unlink(temp.c_str());  // a stopped save's leftover
  });
  H5Handle file;
  std::array<H5Handle, 3> dsets;
  agree(
      comm,
      [&] {
        file = h5_open_parallel(comm, temp, H5Open::create, ctx);
        RA_CHECK(static_cast<bool>(file), io, ctx, ": cannot create '", temp, "'");
        with_h5_context(ctx, [&] {
          const hsize_t dims[4] = {1, hsize_t(s.heads), hsize_t(q_part.tokens()),
                                   hsize_t(s.head_dim)};
          for (std::size_t i = 0; i < kParts.size(); ++i) {
            H5Handle space(RA_H5_CHECK(H5Screate_simple(i < 2 ? 3 : 4, dims, nullptr)),
                           H5Kind::dataspace);
            dsets[i] =
                H5Handle(RA_H5_CHECK(H5Dcreate2(file.get(), kParts[i], H5T_IEEE_F32LE, space.get(),
                                                H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)),
                         H5Kind::dataset);
          }
        });
      },
      StepKind::collective);
  transfer_parts(comm, Transfer::write, dsets, q_part, s, ctx);
  agree(
      comm,
      [&] {
        with_h5_context(ctx, [&] {
          write_root_attribute(file.get(), "resume_key", record.resume_key);
          write_root_attribute(file.get(), "chunk", record.chunk);
          write_root_attribute(file.get(), "steps_done", std::int64_t{record.steps_done});
          for (H5Handle& d : dsets) d.close();
          file.close();
        });
      },
      StepKind::collective);
  agree(comm, [&] {
    if (root) rename_into_place(temp, path, /*overwrite=*/true, "chunk state file");
  });
}

int load_chunk_state(MPI_Comm comm, const std::string& target, const ChunkStateRecord& want,
                     const Partition& q_part, const ChunkStateView& s) {
  H5Quiet quiet;
  const std::string path = chunk_state_path(target), ctx = context(path);
  int steps = 0;
  agree(comm, [&] {
    if (rank_of(comm) == kRoot) steps = recorded_steps(path, want, q_part, s);
  });
  RA_MPI_CHECK(MPI_Bcast(&steps, 1, MPI_INT, kRoot, comm));
  if (steps == 0) {
    remove_chunk_state(comm, target);
    return 0;
  }
  H5Handle file;
  std::array<H5Handle, 3> dsets;
  agree(
      comm,
      [&] {
        file = h5_open_parallel(comm, path, H5Open::read, ctx);
        RA_CHECK(static_cast<bool>(file), io, ctx, ": cannot open it");
        with_h5_context(ctx, [&] {
          for (std::size_t i = 0; i < kParts.size(); ++i)
            dsets[i] = H5Handle(RA_H5_CHECK(H5Dopen2(file.get(), kParts[i], H5P_DEFAULT)),
                                H5Kind::dataset);
        });
      },
      StepKind::collective);
  transfer_parts(comm, Transfer::read, dsets, q_part, s, ctx);
  agree(
      comm,
      [&] {
        with_h5_context(ctx, [&] {
          for (H5Handle& d : dsets) d.close();
          file.close();
        });
      },
      StepKind::collective);
  return steps;
}

void remove_chunk_state(MPI_Comm comm, const std::string& target) {
  const std::string path = chunk_state_path(target);
  agree(comm, [&] {
    if (rank_of(comm) != kRoot) return;
    RA_CHECK(::unlink(path.c_str()) == 0 || errno == ENOENT, io, context(path),
             ": cannot remove it: ", std::strerror(errno));
  });
}

}  // namespace ringattn
