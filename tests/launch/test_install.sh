#!/usr/bin/env bash
# cmake --install as a cluster user would use it, as a non-root user (root
# drops to nobody): install the built tree into a prefix; a project of its
# own finds the library with find_package(ringattn) through
# CMAKE_PREFIX_PATH, builds and runs a kernel call against the float64
# reference; the installed ringattn runs gen -> mpirun run -> verify; the
# module file names the prefix.
#
#   test_install.sh BUILD_DIR SCRATCH_DIR
set -euo pipefail
build=$(realpath "$1")
scratch=$2
case_name=install
# shellcheck source=SCRIPTDIR/../common/script_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common/script_lib.sh"

rm -rf "$scratch"
mkdir -p "$scratch/home"
cd "$scratch"
as_user=()
if [[ $(id -u) -eq 0 ]]; then
  chown -R nobody:nogroup "$scratch"
  as_user=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
  # cmake --install writes its list of files into the build folder, which is
  # root's here (a user's own build folder is theirs).
  touch "$build/install_manifest.txt"
  chown nobody:nogroup "$build/install_manifest.txt"
fi
user() { HOME=$scratch/home TMPDIR=$scratch "${as_user[@]}" "$@"; }
prefix=$scratch/prefix

expect 0 user cmake --install "$build" --prefix "$prefix"
for f in bin/ringattn bin/ringattn-mpirun lib/libringattn.a include/ringattn/kernel/attention.hpp \
  include/ringattn/core/version.hpp lib/cmake/ringattn/ringattnConfig.cmake \
  lib/cmake/ringattn/ringattnTargets.cmake share/ringattn/slurm/ringattn-cpu.sbatch \
  share/ringattn/configs/genomics.toml share/ringattn/datasets/fasta_to_h5.py \
  share/ringattn/scaling_study/scaling_study.py share/ringattn/clients/python/ringattn_client.py \
  share/doc/ringattn/LICENSE; do
  [[ -e $prefix/$f ]] || fail "cmake --install did not install $f"
done
module=$prefix/share/ringattn/modulefiles/ringattn/0.1.0.lua
[[ -f $module ]] || fail "no module file"
grep -q "local root = \"$prefix\"" "$module" || fail "the module file does not name the prefix"
[[ $(stat -c %U "$prefix/bin/ringattn") != root || ${#as_user[@]} -eq 0 ]] ||
  fail "the install ran as root"

# Built as .ci/run builds the tree (launch/build.sh as BUILD_AS, the
# dependencies of tests/launch/stage_deps_prefix.sh in RINGATTN_DEPS_PREFIX
# on CMAKE_PREFIX_PATH): each was found in that prefix, and the installed
# ringattn loads the prefix's toml++ through its RUNPATH, no
# LD_LIBRARY_PATH.
if [[ -n ${RINGATTN_DEPS_PREFIX:-} ]]; then
  deps=$(realpath "$RINGATTN_DEPS_PREFIX")
  for var in CLI11_DIR nlohmann_json_DIR tomlplusplus_DIR LIBXSMM_INCLUDE_DIR LIBXSMM_LIBRARY \
    LIBXSMM_NOBLAS_LIBRARY; do
    value=$(sed -n "s/^$var:[A-Z]*=//p" "$build/CMakeCache.txt")
    # Both sides resolved: a symlinked TMPDIR spells one folder two ways.
    [[ -z $value ]] || value=$(realpath -m "$value")
    [[ $value == "$deps"/* ]] || fail "the build took $var from '$value', not from $deps"
  done
  toml=$(env -u LD_LIBRARY_PATH ldd "$prefix/bin/ringattn" | grep libtomlplusplus || true)
  [[ $toml == *"=> $deps/"* ]] || fail "the installed ringattn loads toml++ as '$toml', not from $deps"
  builder=$(stat -c %U "$build/CMakeCache.txt")
  # A build from a git checkout records its commit, whoever built it (git
  # refuses another user's checkout unless build.sh marks it safe).
  source_dir=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt")
  if git -C "$source_dir" rev-parse HEAD >/dev/null 2>&1; then
    ! grep -q 'kGitCommit = "unknown"' "$prefix/include/ringattn/core/version.hpp" ||
      fail "the build by $builder recorded its commit as 'unknown'"
  fi
  echo "  built from source by $builder, libxsmm, toml++, CLI11 and nlohmann_json from $deps"
  [[ $builder != root || -z ${BUILD_AS:-} ]] ||
    echo "  NOTE: BUILD_AS=$BUILD_AS, but the tree was built by root (launch/build.sh said why)"
else
  echo "  (where the dependencies came from is not checked: RINGATTN_DEPS_PREFIX is unset; .ci/run sets it)"
fi

# A project of the user's own, against the installed package only.
mkdir -p app
cat >app/CMakeLists.txt <<'CMAKE'
cmake_minimum_required(VERSION 3.24)
project(app LANGUAGES C CXX)
set(CMAKE_CXX_STANDARD 20)
find_package(ringattn 0.1 REQUIRED)
add_executable(app app.cpp)
target_link_libraries(app PRIVATE ringattn::ringattn)
CMAKE
cat >app/app.cpp <<'CPP'
// One fused-kernel call against the float64 reference, through the
// installed headers and library.
#include <cmath>
#include <cstdio>
#include <vector>

#include "kernel/attention.hpp"
#include "kernel/reference.hpp"

int main() {
  using namespace ringattn;
  const std::int64_t H = 2, N = 100, D = 16;
  std::vector<float> q(H * N * D), k(H * N * D), v(H * N * D), o(H * N * D), lse(H * N);
  for (std::size_t i = 0; i < q.size(); ++i) {
    q[i] = std::sin(0.1f * static_cast<float>(i));
    k[i] = std::cos(0.07f * static_cast<float>(i));
    v[i] = std::sin(0.03f * static_cast<float>(i) + 1.0f);
  }
  AttnParams p = AttnParams::dense(q.data(), k.data(), v.data(), DType::f32, 1, H, H, N, N, D);
  p.causal = true;
  attention_forward(p, o.data(), lse.data());
  std::vector<double> ro(o.size()), rl(lse.size());
  reference_attention(p, ro.data(), rl.data());
  double worst = 0;
  for (std::size_t i = 0; i < o.size(); ++i) worst = std::fmax(worst, std::fabs(o[i] - ro[i]));
  std::printf("max |o - ref| = %.3g\n", worst);
  return worst < 1e-5 ? 0 : 1;
}
CPP
[[ ${#as_user[@]} -eq 0 ]] || chown -R nobody:nogroup app
expect 0 user cmake -S app -B app/build -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix"
expect 0 user cmake --build app/build -j 2
expect 0 user app/build/app
grep -q 'max |o - ref|' out.txt || fail "the app printed no comparison"

# The installed command, on PATH, under mpirun, as that user.
export PATH=$prefix/bin:$PATH
unset OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM
[[ ${#as_user[@]} -gt 0 ]] || export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
expect 0 user ringattn gen --output in.h5 --heads 2 --n 512 --d 32
expect 0 user "${MPIEXEC:-mpirun}" -n 2 --oversubscribe "$prefix/bin/ringattn" run --input in.h5 \
  --output out.h5 --causal --threads 1 --progress none
expect 0 user ringattn verify --input in.h5 --output out.h5
grep -q '^verify: PASS' out.txt || fail "verify of the installed ringattn's output did not pass"
echo "ok: install"
