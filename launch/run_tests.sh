#!/usr/bin/env bash
# README command (2): set everything up and run all tests. CI runs this.
# Extra arguments go to ctest.
#
#   BUILD_DIR   build folder (build)
#   CTEST_JOBS  tests run at once (2: the project machines have 2 cores; the
#               tests are single-threaded or 1 to 4 ranks of one thread, and
#               each works in its own scratch folder)
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install_deps.sh
bash launch/build.sh
BUILD_DIR=${BUILD_DIR:-build}
# Open MPI refuses to start as root unless told it is intended (CI runs as root).
if [[ $(id -u) -eq 0 ]]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
cd "$BUILD_DIR"
ctest --output-on-failure --timeout 900 -j "${CTEST_JOBS:-2}" "$@"
