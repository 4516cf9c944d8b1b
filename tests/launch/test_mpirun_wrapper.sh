#!/usr/bin/env bash
# launch/ringattn-mpirun: the commands it builds (--dry-run), its usage errors,
# and real runs with 1 and 2 ranks on a generated input checked by
# `ringattn verify`. Also: the Slurm batch scripts fail fast, in one line,
# outside Slurm.
#
#   tests/launch/test_mpirun_wrapper.sh RINGATTN_BINARY [SCRATCH_PARENT]
#
# Exit: 0 passed, 1 failed.
set -uo pipefail

ringattn=${1:?usage: test_mpirun_wrapper.sh RINGATTN_BINARY [SCRATCH_PARENT]}
parent=${2:-${TMPDIR:-/tmp}}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
W=$repo/launch/ringattn-mpirun
me=test_mpirun_wrapper

mkdir -p "$parent"
S=$(mktemp -d "$parent/ringattn-wrapper.XXXXXX") || { echo "$me: FAIL: no scratch folder" >&2; exit 1; }
trap 'rm -rf "$S"' EXIT

failures=0
fail() { echo "$me: FAIL: $*" >&2; failures=$((failures + 1)); }
ok() { echo "$me: ok: $*" >&2; }

# The wrapper is to set these itself (as root); the test's environment may have them.
unset OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM OMP_NUM_THREADS
export RINGATTN=$ringattn

# dry WANT... -- ARGS: the dry-run line must contain every WANT (fixed strings).
# "!X" means the line must not contain X.
expect_dry() {
  local wants=() line w
  while [[ $1 != -- ]]; do wants+=("$1"); shift; done
  shift
  line=$(timeout 30 "$W" --dry-run "$@" 2>/dev/null) || { fail "dry run failed: $*"; return; }
  for w in "${wants[@]}"; do
    if [[ $w == !* ]]; then
      [[ $line == *"${w#!}"* ]] && { fail "'$*' gave '$line', which has '${w#!}'"; return; }
    else
      [[ $line == *"$w"* ]] || { fail "'$*' gave '$line', without '$w'"; return; }
    fi
  done
  ok "dry run: $*"
}

# Binding and threads, with the core count fixed so the cases hold on any machine.
export RINGATTN_CORES=4
expect_dry "mpirun -np 2 " "--map-by slot:PE=2 --bind-to core" "OMP_NUM_THREADS=2" \
  "-x OMP_NUM_THREADS" "run --config c.toml --threads 2" "!--oversubscribe" \
  -- -n 2 --threads 2 -- run --config c.toml
expect_dry "-np 4 " "--map-by core --bind-to core" "run --threads 1" "!--oversubscribe" \
  -- -n 4 --threads 1 -- run
expect_dry "-np 2 " "--map-by slot:PE=2 --bind-to core" "!OMP_NUM_THREADS" "!--threads" \
  -- -n 2 -- run --config c.toml
expect_dry "-np 6 --oversubscribe" "--bind-to none" "!--map-by" -- -n 6 -- run
expect_dry "-np 3 " "--bind-to none" "!--oversubscribe" -- -n 3 --threads 2 -- run
expect_dry "--bind-to none" "!--map-by" "run --threads 1" -- -n 2 --threads 1 --bind none -- run
# --threads goes only to subcommands that take it; OMP_NUM_THREADS still set.
expect_dry "OMP_NUM_THREADS=2" "gen --output x.h5" "!gen --output x.h5 --threads" \
  -- -n 1 --threads 2 -- gen --output x.h5
expect_dry "bench ring --threads 2" -- -n 2 --threads 2 -- bench ring
# Unknown options before "--" go to mpirun, in order, before the binary.
expect_dry "--mca btl tcp\\,self $ringattn run" -- -n 2 --mca btl tcp,self -- run
expect_dry "-np 2 " -- -np 2 -- run
expect_dry "$ringattn run" -- -n 1 -- run
# Root: the Open MPI root variables only when root.
if [[ $(id -u) -eq 0 ]]; then
  expect_dry "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1" -- -n 1 -- run
  if id nobody >/dev/null 2>&1 && command -v runuser >/dev/null; then
    line=$(cd / && timeout 30 runuser -u nobody -- env RINGATTN="$ringattn" RINGATTN_CORES=4 \
      bash "$W" --dry-run -n 1 -- run 2>/dev/null)
    if [[ -n $line && $line != *OMPI_ALLOW_RUN_AS_ROOT* ]]; then ok "no root variables as nobody"
    else fail "as nobody: '$line'"; fi
  fi
else
  expect_dry "!OMPI_ALLOW_RUN_AS_ROOT" -- -n 1 -- run
fi
unset RINGATTN_CORES

# The binary: build/ringattn in the repository when RINGATTN is unset.
line=$(env -u RINGATTN timeout 30 "$W" --dry-run -n 1 -- run 2>/dev/null)
[[ $line == *" $repo/build/ringattn run"* ]] && ok "default binary" || fail "default binary: '$line'"

# Usage errors: exit 2 and a line naming the problem.
expect_usage() {
  local want=$1 out rc
  shift
  out=$(timeout 30 "$W" "$@" 2>&1 >/dev/null)
  rc=$?
  if ((rc == 2)) && [[ $out == *"$want"* ]]; then ok "usage error: $*"
  else fail "'$*': exit $rc, '$out' (wanted 2 and '$want')"; fi
}
expect_usage "give the number of ranks" -- run
expect_usage "positive integer" -n 0 -- run
expect_usage "positive integer, not 'x'" -n 2 --threads x -- run
expect_usage "--bind wants core or none" -n 2 --bind socket -- run
expect_usage "after '--'" -n 2 run
expect_usage "no ringattn arguments" -n 2 --
expect_usage "give --threads once" -n 2 --threads 1 -- run --threads 2
RINGATTN=$S/nonexistent expect_usage "ringattn binary not found" -n 1 -- run
out=$(timeout 30 "$W" --help) && [[ $out == *"--bind core|none"* && $out == *"--oversubscribe"* ]] &&
  ok "--help" || fail "--help"

# Real runs: 1 and 2 ranks (and 1 rank x 2 threads), each verified.
[[ $(id -u) -eq 0 ]] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # for gen/verify
cd "$S" || exit 1
if timeout 120 "$ringattn" gen --output in.h5 --n 512 --d 32 --heads 2 >/dev/null; then
  unset OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM
  for spec in "1 1" "2 1" "1 2"; do
    read -r np th <<<"$spec"
    rm -f out.h5
    if timeout 300 "$W" -n "$np" --threads "$th" -- run --input in.h5 --output out.h5 --causal --lse \
         >"run-$np-$th.log" 2>&1 &&
       grep -q "$np ranks x $th threads" "run-$np-$th.log" &&
       (export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
        timeout 120 "$ringattn" verify --input in.h5 --output out.h5 >"verify-$np-$th.log" 2>&1); then
      ok "run -n $np --threads $th, verified"
    else
      fail "run -n $np --threads $th:"; tail -n 20 "run-$np-$th.log" "verify-$np-$th.log" >&2 2>/dev/null
    fi
  done
else
  fail "ringattn gen"
fi

# A failing run through the wrapper: ringattn's error line and nothing of
# mpirun's own after it (-q), the ranks' exit code (4: I/O).
out=$(timeout 120 "$W" -n 2 -- run --input "$PWD/does-not-exist.h5" --output o.h5 2>&1)
rc=$?
if ((rc == 4)) && [[ -n $out ]] && ! grep -qv '^ringattn: io error: ' <<<"$out"; then
  ok "a failing run prints only ringattn's line"
else
  fail "a failing run: exit $rc, output '$out'"
fi

# The batch scripts outside Slurm: exit 2, one line.
for s in ringattn-cpu.sbatch ringattn-gpu.sbatch; do
  out=$(env -u SLURM_JOB_ID timeout 30 bash "$repo/launch/slurm/$s" x.toml 2>&1)
  rc=$?
  if ((rc == 2)) && [[ $(wc -l <<<"$out") -eq 1 && $out == *"not under Slurm (no SLURM_JOB_ID)"* ]]; then
    ok "$s outside Slurm"
  else
    fail "$s outside Slurm: exit $rc, '$out'"
  fi
done

if ((failures > 0)); then echo "$me: $failures failure(s)" >&2; exit 1; fi
echo "$me: PASS" >&2
