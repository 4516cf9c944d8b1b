#!/usr/bin/env bash
# Fuzzes fuzz_input_validation for a bounded time, then judges what it found.
#   fuzz.sh FUZZER WORKDIR SECONDS SEEDDIR...
# libFuzzer runs in fork mode with one worker and goes on after a crash, hang
# or out-of-memory (-ignore_*), so one HDF5 crash does not end the search;
# every input that failed is saved under WORKDIR/artifacts and then replayed
# by replay.sh, which leaves out known HDF5 issues (KNOWN_HDF5_ISSUES.md) and
# fails on anything else (its paths go to UNKNOWN_LIST when that is set).
# Limits: 10 s per input (a hang), 2 GiB resident, inputs up to 16 KiB.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fuzzer=$1 work=$2 seconds=$3
shift 3
mkdir -p "$work/corpus" "$work/artifacts"
rm -f "$work/artifacts"/*
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$here/../sanitizers/lsan.supp}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
echo "fuzz: ${seconds}s from $* (corpus $work/corpus)"
"$fuzzer" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
  -dict="$here/hdf5.dict" -artifact_prefix="$work/artifacts/" -print_final_stats=1 \
  "$work/corpus" "$@" >"$work/fuzz.log" 2>&1
rc=$?
grep -E '^#[0-9]+: cov|INFO: fuzzed for|^stat::' "$work/fuzz.log" | tail -6 | sed 's/^/  /'
n=$(find "$work/artifacts" -type f | wc -l)
echo "fuzz: libFuzzer exited with $rc; $n failing inputs saved (log $work/fuzz.log)"
((n == 0)) && [[ $rc -eq 0 ]] && exit 0
((n == 0)) && { tail -30 "$work/fuzz.log"; exit 1; }
exec bash "$here/replay.sh" "$fuzzer" "$work/artifacts"
