#!/usr/bin/env bash
# Fault handling of `ringattn run`, one case per call:
#
#   test_faults.sh RINGATTN SCRATCH_DIR CASE
#
# Cases (each in SCRATCH_DIR/CASE, emptied first):
#   stop_resume          a stop signal (injected on rank 0) after a chunk's
#                        last ring step stops at the chunk's end, one inside
#                        a chunk at the next ring step (keeping the chunk's
#                        state); each exits 7 and keeps the partial output,
#                        and --resume finishes it, bit-identical to an
#                        uninterrupted run
#   stop_resume_backward a stop inside a --backward chunk (its forward or its
#                        backward ring) comes at the chunk's end; --resume
#                        finishes it bit-identical, dq, dk and dv included,
#                        and refuses another thread count (dq's bits depend
#                        on it)
#   stop_refusals        a stop injected on rank 1 of 3 stops every rank; the
#                        partial output then refuses a run without --resume,
#                        a resume with other ranks, settings or input; and
#                        --overwrite starts again
#   signals              real signals: SIGUSR1 to mpirun (it forwards it) and
#                        SIGTERM to the ranks (as scancel does) stop the job
#                        at a boundary; the resume is bit-identical
#   watchdog_ring        a rank hangs mid-ring: its peer's ring wait ends the
#                        job (exit 6) within the timeout, naming the peer
#   watchdog_collective  a rank hangs before the collective write: the
#                        watchdog thread ends the job (exit 6)
#   dead_rank            a rank SIGKILLs itself mid-ring: the job exits
#                        non-zero promptly, nothing is committed, and
#                        --resume continues from the chunks already written
#   bad_fault_spec       a malformed RINGATTN_FAULT is a usage error (exit 2)
#
# Faults are injected with RINGATTN_FAULT (src/job/fault_injection.hpp).
# Environment: MPIEXEC (default mpirun), H5PY_PYTHON (default /usr/bin/python3).
set -euo pipefail
# shellcheck source=SCRIPTDIR/../common/script_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common/script_lib.sh"

case_args "$@"
mpi_settings
py=${H5PY_PYTHON:-/usr/bin/python3}
need_h5py

enter_case_dir

# same_bits A B: datasets o (and lse if in A) bit-identical.
same_bits() {
  "$py" - "$1" "$2" <<'PY' || fail "$1 and $2 differ"
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
for name in a:
    x, y = a[name][...], b[name][...]
    assert x.dtype == y.dtype and x.shape == y.shape, name
    assert x.tobytes() == y.tobytes(), f"{name}: bits differ"
assert int(b.attrs["complete"]) == 1
PY
}

attr() { "$py" -c "import h5py,sys; print(h5py.File(sys.argv[1],'r').attrs[sys.argv[2]])" "$1" "$2"; }

small_input() { "$bin" gen -o in.h5 --batch 2 --heads 4 --n 1024 --d 32 >/dev/null; }  # 8 chunks
no_output() {
  [[ ! -e $1 ]] || fail "$1 was committed"
}

# ends_promptly T RC NP ARGS...: the run on NP ranks with --comm-timeout T
# exits RC within T + 15 s.
ends_promptly() {
  local t=$1 rc=$2 start took
  shift 2
  start=$(date +%s)
  expect "$rc" ringattn_run "$@" --comm-timeout "$t"
  took=$(($(date +%s) - start))
  ((took < t + 15)) || fail "took ${took} s with --comm-timeout $t"
}

case $case_name in
stop_resume)
  small_input
  expect 0 ringattn_run 2 --input in.h5 --output ref.h5 --causal --lse
  # A signal raised after chunk 2's last stop agreement (on 2 ranks the only one,
  # after step 1): the stop comes at the chunk's end.
  RINGATTN_FAULT=usr1:rank=0:chunk=2:step=1 expect 7 ringattn_run 2 --input in.h5 --output o.h5 --causal --lse
  one_error_line "stopped by SIGUSR1 after 3 of 8 chunks;"
  no_output o.h5
  [[ -e .o.h5.partial && ! -e .o.h5.state ]] || fail "partial not kept, or a chunk state saved"
  expect 0 ringattn_run 2 --input in.h5 --output o.h5 --causal --lse --resume
  grep -q "resumed from .*3 of 8 chunks were" out.txt || fail "no resume line"
  [[ ! -e .o.h5.partial ]] || fail "the partial output outlived the commit"
  same_bits ref.h5 o.h5
  [[ $(attr o.h5 resumed_at_chunk) == 3 ]] || fail "resumed_at_chunk is not 3"
  # A signal inside chunk 2 of a 3-rank ring (raised after step 1): the stop
  # comes at the next ring step, the chunk's fp32 state is kept, and the
  # resume continues from that step, bit-identical.
  expect 0 ringattn_run 3 --input in.h5 --output ref3.h5 --causal --lse
  RINGATTN_FAULT=usr1:rank=0:chunk=2:step=1 expect 7 ringattn_run 3 --input in.h5 --output o2.h5 --causal --lse
  one_error_line "stopped by SIGUSR1 after 2 of 8 chunks and 2 of 3 ring steps of the next"
  no_output o2.h5
  [[ -e .o2.h5.partial && -e .o2.h5.state ]] || fail "the partial or the chunk state is missing"
  expect 0 ringattn_run 3 --input in.h5 --output o2.h5 --causal --lse --resume
  grep -q "resumed from .*2 of 8 chunks and 2 of 3 ring steps of the next were" out.txt ||
    fail "no resume line"
  [[ ! -e .o2.h5.partial && ! -e .o2.h5.state ]] || fail "the partial or the state outlived the commit"
  same_bits ref3.h5 o2.h5
  # --resume with nothing to resume runs from the start.
  expect 0 ringattn_run 2 --input in.h5 --output fresh.h5 --causal --lse --resume
  grep -q "no partial output" out.txt || fail "no 'no partial output' note"
  same_bits ref.h5 fresh.h5
  ;;
stop_resume_backward)
  "$bin" gen -o in.h5 --batch 2 --heads 4 --n 1024 --d 32 --backward >/dev/null  # 8 chunks
  expect 0 ringattn_run 3 --input in.h5 --output ref.h5 --causal --backward
  # Raised after ring step 2 of chunk 2's backward (its forward's are 1-3).
  RINGATTN_FAULT=usr1:rank=0:chunk=2:step=5 expect 7 ringattn_run 3 --input in.h5 --output o.h5 --causal \
    --backward
  one_error_line "stopped by SIGUSR1 after 3 of 8 chunks;"
  no_output o.h5
  [[ -e .o.h5.partial && ! -e .o.h5.state ]] || fail "partial not kept, or a chunk state saved"
  expect 2 "$mpiexec" -n 3 --oversubscribe "$bin" run --threads 2 --input in.h5 --output o.h5 \
    --causal --backward --resume
  one_error_line "cannot resume"
  expect 0 ringattn_run 3 --input in.h5 --output o.h5 --causal --backward --resume
  grep -q "resumed from .*3 of 8 chunks were" out.txt || fail "no resume line"
  same_bits ref.h5 o.h5
  # A rank that hangs inside the backward ring: its peers' hop waits end
  # the job within the timeout, naming it, and nothing is committed.
  RINGATTN_FAULT=hang:rank=1:chunk=1:step=4 expect 6 ringattn_run 3 --input in.h5 --output h.h5 --causal \
    --backward --comm-timeout 3
  grep -q "rank 1" err.txt || fail "the hung rank is not named"
  no_output h.h5
  for d in dq dk dv; do
    "$py" -c "import h5py,sys; sys.exit(0 if sys.argv[2] in h5py.File(sys.argv[1],'r') else 1)" \
      o.h5 "$d" || fail "o.h5 lacks $d"
  done
  ;;
stop_refusals)
  small_input
  RINGATTN_FAULT=term:rank=1:chunk=1:step=2 expect 7 ringattn_run 3 --input in.h5 --output o.h5
  one_error_line "stopped by SIGTERM after 2 of 8 chunks"
  expect 2 ringattn_run 3 --input in.h5 --output o.h5
  one_error_line "left its partial output"
  expect 2 ringattn_run 2 --input in.h5 --output o.h5 --resume
  one_error_line "cannot resume, the run differs in ranks"
  expect 2 ringattn_run 3 --input in.h5 --output o.h5 --resume --causal
  one_error_line "differs in causal"
  touch -d '2001-01-01' in.h5
  expect 2 ringattn_run 3 --input in.h5 --output o.h5 --resume
  one_error_line "differs in input_mtime_ns"
  [[ -e .o.h5.partial ]] || fail "a refused resume lost the partial output"
  expect 0 ringattn_run 3 --input in.h5 --output o.h5 --overwrite
  [[ ! -e .o.h5.partial ]] || fail "--overwrite left the old partial output"
  ;;
signals)
  "$bin" gen -o big.h5 --heads 8 --n 16384 --d 32 --dtype f16 >/dev/null  # 8 chunks, seconds each
  expect 0 ringattn_run 2 --input big.h5 --output ref.h5
  for how in usr1-mpirun term-ranks; do
    rm -f o.h5
    # mpirun itself in the background (not a function's subshell): $! is mpirun.
    "$mpiexec" -n 2 "$bin" run --threads 1 --progress-interval 1000 --input big.h5 \
      --output o.h5 >out.txt 2>err.txt &
    pid=$!
    for _ in $(seq 200); do [[ -e .o.h5.partial ]] && break; sleep 0.05; done
    sleep 0.5
    if [[ $how == usr1-mpirun ]]; then
      kill -USR1 "$pid"  # Open MPI's mpirun forwards SIGUSR1 to the ranks
    else
      # Anchored: the ranks only. mpirun's command line holds the same words,
      # and a TERM to mpirun makes it kill the ranks after a grace that a
      # ring step on a busy machine outlasts (no 'stopped by' line then).
      pkill -TERM -f -- "^$bin run --threads 1 --progress-interval 1000 --input big.h5 --output o.h5"
    fi
    rc=0
    wait "$pid" || rc=$?
    # With SIGTERM delivered to the ranks, mpirun reports 1 of its own; the ranks exit 7.
    if [[ $how == usr1-mpirun ]]; then [[ $rc -eq 7 ]] || fail "$how: exit $rc, expected 7"; fi
    [[ $rc -ne 0 ]] || fail "$how: the run was not stopped (finished before the signal?)"
    grep -q "stopped by SIG" err.txt || fail "$how: no 'stopped by' line"
    no_output o.h5
    expect 0 ringattn_run 2 --input big.h5 --output o.h5 --resume
    same_bits ref.h5 o.h5
  done
  ;;
watchdog_ring)
  small_input
  RINGATTN_FAULT=hang:rank=1:chunk=1:step=1 ends_promptly 3 6 3 --input in.h5 --output o.h5
  grep -q "ring hop: receive from rank 1 did not complete within 3 s" err.txt ||
    fail "no line naming the peer"
  no_output o.h5
  ;;
watchdog_collective)
  small_input
  # With 2 ranks the only hop is done by step 1: rank 0 then waits in the collective write.
  RINGATTN_FAULT=hang:rank=1:chunk=0:step=2 ends_promptly 3 6 2 --input in.h5 --output o.h5
  grep -q "rank 0 on .*: collective write of chunk 0 did not complete within 3 s" err.txt ||
    fail "no watchdog line from rank 0"
  no_output o.h5
  ;;
dead_rank)
  small_input
  expect 0 ringattn_run 2 --input in.h5 --output ref.h5 --lse
  # --checkpoint-interval 0: progress recorded after every chunk, so the kill loses none.
  RINGATTN_FAULT=kill:rank=1:chunk=3:step=1 ends_promptly 5 nonzero 2 --input in.h5 --output o.h5 \
    --lse --checkpoint-interval 0
  no_output o.h5
  expect 0 ringattn_run 2 --input in.h5 --output o.h5 --lse --resume
  grep -q "resumed from .*3 of 8 chunks" out.txt || fail "did not resume from chunk 3"
  same_bits ref.h5 o.h5
  ;;
bad_fault_spec)
  small_input
  RINGATTN_FAULT=explode:rank=0 expect 2 ringattn_run 2 --input in.h5 --output o.h5
  one_error_line "RINGATTN_FAULT='explode:rank=0': unknown action"
  RINGATTN_FAULT=kill:chunk=1 expect 2 ringattn_run 2 --input in.h5 --output o.h5
  one_error_line "rank=<r> is required"
  no_output o.h5
  [[ -z $(ls -A | grep -v '^in.h5$' | grep -v -e '^out.txt$' -e '^err.txt$') ]] || fail "files left: $(ls -A)"
  ;;
*)
  echo "unknown case $case_name" >&2
  exit 2
  ;;
esac
echo "PASS [$case_name]"
