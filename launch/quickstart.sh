#!/usr/bin/env bash
# README command (1): set everything up and run the main job on a built-in
# example. Today that is the kernel's self-check against the float64
# reference and a short kernel benchmark (the HDF5 ring job replaces it when
# `ringattn run` lands).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install_deps.sh
bash launch/build.sh
BUILD_DIR=${BUILD_DIR:-build}
"$BUILD_DIR/ringattn" --version
"$BUILD_DIR/ringattn" selfcheck
"$BUILD_DIR/ringattn" bench kernel --n 2048 --d 128 --heads 4 --causal --reps 3
