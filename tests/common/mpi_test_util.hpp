// What the tests that run under mpirun share (with mpi_gtest_main.cpp): this
// process's place in MPI_COMM_WORLD, verdicts every rank agrees on, and a
// check that an Error is the same on every rank.
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace ringattn::test {

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
inline int world_size() {
  int p = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &p);
  return p;
}

// True when mine is true on every rank. Collective.
inline bool on_every_rank(bool mine) {
  int v = mine ? 1 : 0, all = 0;
  MPI_Allreduce(&v, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all != 0;
}

// True when text is the same on every rank (compared with rank 0's).
// Collective.
inline bool same_on_every_rank(std::string text) {
  long long n = static_cast<long long>(text.size());
  MPI_Bcast(&n, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
  std::string root(static_cast<std::size_t>(n), '\0');
  if (world_rank() == 0) root = text;
  if (n > 0) MPI_Bcast(root.data(), static_cast<int>(n), MPI_CHAR, 0, MPI_COMM_WORLD);
  return on_every_rank(root == text);
}

// Runs fn (collective) and expects it to throw an Error of class `cls` whose
// message is one line, contains every needle, and is the same on every rank.
inline void expect_agreed_error(MPI_Comm comm, const std::function<void()>& fn, ErrorClass cls,
                                const std::vector<std::string>& needles) {
  std::string msg;
  bool thrown = false;
  try {
    fn();
  } catch (const Error& e) {
    thrown = true;
    msg = e.what();
    EXPECT_EQ(error_class_name(e.error_class()), std::string(error_class_name(cls))) << msg;
  }
  EXPECT_TRUE(thrown) << "no Error thrown (expected class " << error_class_name(cls) << ")";
  EXPECT_EQ(msg.find('\n'), std::string::npos) << "message spans lines: " << msg;
  for (const auto& n : needles)
    EXPECT_NE(msg.find(n), std::string::npos) << "message lacks \"" << n << "\": " << msg;

  // The same text on every rank: compare with rank 0's.
  std::string root = msg;
  int len = static_cast<int>(root.size());
  MPI_Bcast(&len, 1, MPI_INT, 0, comm);
  root.resize(static_cast<std::size_t>(len));
  MPI_Bcast(root.data(), len, MPI_CHAR, 0, comm);
  EXPECT_EQ(msg, root) << "ranks disagree on the error";
}

}  // namespace ringattn::test
