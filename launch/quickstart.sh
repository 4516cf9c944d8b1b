#!/usr/bin/env bash
# README command (1): set everything up and run the main job on a built-in
# example: install packages, build, generate a small seeded input, run the
# ring job on 2 ranks with configs/smoke.toml, and verify the output against
# a float64 recomputation. Files go to out/ (the smoke config's paths).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install_deps.sh
bash launch/build.sh
BUILD_DIR=${BUILD_DIR:-build}
RA="$BUILD_DIR/ringattn"
# Open MPI refuses to start as root unless told it is intended.
if [[ $(id -u) -eq 0 ]]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
mkdir -p out
"$RA" --version
"$RA" gen --output out/smoke_in.h5 --batch 1 --heads 4 --kv-heads 2 --n 4096 --d 64 --overwrite
# One thread per rank: 2 ranks fill a 2-core machine (--oversubscribe lets
# the example start on a 1-core one too).
mpirun -np 2 --oversubscribe "$RA" run --config configs/smoke.toml --threads 1
"$RA" verify --input out/smoke_in.h5 --output out/smoke_out.h5 --rows 0
"$RA" info out/smoke_out.h5 | head -20
echo "quickstart: done (output out/smoke_out.h5, metrics out/smoke_metrics.json)"
