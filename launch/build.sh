#!/usr/bin/env bash
# Configures and builds ringattn (Release) into ${BUILD_DIR:-build}. Extra
# arguments go to CMake's configure step, e.g. -DRINGATTN_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-2}   # the project machines have 2 cores; set JOBS on bigger ones
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$BUILD_DIR" -j "$JOBS"
