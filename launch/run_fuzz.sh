#!/usr/bin/env bash
# Fuzzes input validation (issue 7): libFuzzer + ASan + UBSan on
# ringattn::inspect_input, the checks every run, `info` and `verify` begin
# with. CI runs it after launch/run_sanitizers.sh.
#
#   1. builds build-fuzz with clang (gcc has no libFuzzer): RINGATTN_FUZZ=ON,
#      only the library and the target fuzz_input_validation;
#   2. writes the seed corpus (tests/fuzz/make_seeds.py: small valid and
#      broken inputs) and replays it and every file in tests/fuzz/regressions/;
#   3. fuzzes for FUZZ_SECONDS (60). A crash, hang or sanitizer report found is
#      copied into tests/fuzz/regressions/ and the script fails, printing how
#      to reproduce it. Crashes inside HDF5 listed in
#      tests/fuzz/KNOWN_HDF5_ISSUES.md are left out of the verdict by name or
#      stack signature, and the script says so.
#
#   BUILD_DIR (build-fuzz), JOBS (2), FUZZ_SECONDS (60)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build-fuzz}
JOBS=${JOBS:-2}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
REGRESSIONS=$ROOT/tests/fuzz/regressions

bash launch/install_deps.sh

t0=$SECONDS
mkdir -p "$BUILD_DIR"
CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DRINGATTN_FUZZ=ON -DRINGATTN_CUDA=OFF -DRINGATTN_BENCH=OFF -DRINGATTN_TESTS=ON \
  >"$BUILD_DIR/configure.log" 2>&1 || { cat "$BUILD_DIR/configure.log"; exit 1; }
cmake --build "$BUILD_DIR" -j "$JOBS" --target fuzz_input_validation
t_build=$((SECONDS - t0))

fuzzer=$ROOT/$BUILD_DIR/tests/fuzz/fuzz_input_validation
seeds=$ROOT/$BUILD_DIR/tests/fuzz/seeds
work=$ROOT/$BUILD_DIR/tests/fuzz/work
# No leak check in libFuzzer's per-input sense beyond LSan at exit; third-party
# leaks (Open MPI, HDF5) are suppressed, ours are not.
export LSAN_OPTIONS="suppressions=$ROOT/tests/sanitizers/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:report_error_type=1"
export OMP_NUM_THREADS=1
if [[ $(id -u) -eq 0 ]]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

t1=$SECONDS
/usr/bin/python3 tests/fuzz/make_seeds.py "$seeds"
rc=0
bash tests/fuzz/replay.sh "$fuzzer" "$REGRESSIONS" "$seeds" || rc=1
t_replay=$((SECONDS - t1))

t2=$SECONDS
unknown=$(mktemp)
trap 'rm -f "$unknown"' EXIT
if ! UNKNOWN_LIST=$unknown bash tests/fuzz/fuzz.sh "$fuzzer" "$work" "$FUZZ_SECONDS" "$seeds"; then
  rc=1
  while IFS= read -r f; do
    cp "$f" "$REGRESSIONS/"
    echo "run_fuzz: new finding kept as tests/fuzz/regressions/$(basename "$f")"
    echo "  reproduce: bash launch/run_fuzz.sh builds $BUILD_DIR; then"
    echo "    $BUILD_DIR/tests/fuzz/fuzz_input_validation tests/fuzz/regressions/$(basename "$f")"
  done <"$unknown"
fi
t_fuzz=$((SECONDS - t2))
echo "run_fuzz: configure+build ${t_build}s, seeds+replay ${t_replay}s, fuzzing ${t_fuzz}s, status $rc"
exit "$rc"
