#!/usr/bin/env bash
# Starts a throwaway single-node Slurm cluster on this machine (munged, slurmctld,
# slurmd; no systemd) and runs launch/slurm/*.sbatch on generated inputs with 2
# tasks, then stops all it started and removes its scratch folder, whatever
# happens:
#   1. ringattn-cpu.sbatch, small run: exit 0 (--resume without a partial output
#      starts afresh), output verified;
#   2. ringattn-cpu.sbatch, several-second run: USR1 to the batch shell (as
#      --signal=B:USR1@300 sends it) is forwarded to the ranks, which stop (exit
#      7); the script requeues the job; its second run resumes and completes;
#      the log shows each stage and the output verifies; with --no-requeue the
#      job exits 7 instead, and the same sbatch command again resumes;
#   3. ringattn-gpu.sbatch on this GPU-less node: one-line "--backend cuda: no
#      CUDA device" error, job exit 2;
#   4. ringattn-gpu.sbatch with RINGATTN_BACKEND=cpu: runs, output verified;
#   5. ringattn-gpu.sbatch's CUDA_VISIBLE_DEVICES per node-local rank and the
#      flags it passes (a stand-in for ringattn records them).
# About 65 s.
#
#   tests/launch/test_slurm.sh RINGATTN_BINARY [SCRATCH_PARENT]
#
# Exit: 0 passed, 1 failed, 77 skipped (Slurm or munge not installed, or not
# root: the daemons run as root and munged as the munge user).
# Packages (Debian): slurm-wlm slurmctld slurmd slurm-client munge.
set -uo pipefail

ringattn=${1:?usage: test_slurm.sh RINGATTN_BINARY [SCRATCH_PARENT]}
parent=${2:-${TMPDIR:-/tmp}}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
sbatch_script=$repo/launch/slurm/ringattn-cpu.sbatch
me=test_slurm

log() { echo "$me: $*" >&2; }
skip() { log "SKIP: $*"; exit 77; }

# ---- can it run here? ------------------------------------------------------------
missing=()
for c in munged slurmctld slurmd sbatch sinfo squeue scancel srun; do
  command -v "$c" >/dev/null 2>&1 || [[ -x /usr/sbin/$c ]] || missing+=("$c")
done
((${#missing[@]} == 0)) ||
  skip "not installed: ${missing[*]} (Debian: apt-get install slurm-wlm slurmctld slurmd slurm-client munge)"
[[ $(id -u) -eq 0 ]] || skip "needs root (slurmd runs as root, munged as the munge user)"
id munge >/dev/null 2>&1 || skip "no munge user (the munge package creates it)"
[[ -x $ringattn ]] || { log "FAIL: ringattn binary not executable: $ringattn"; exit 1; }
export PATH=$PATH:/usr/sbin:/sbin

# ---- scratch and cleanup -----------------------------------------------------------
mkdir -p "$parent"
S=$(mktemp -d "$parent/ringattn-slurm.XXXXXX") || { log "FAIL: cannot make a scratch folder in $parent"; exit 1; }
chmod 755 "$S"
export SLURM_CONF=$S/slurm.conf
munge_pid="" ctld_pid="" slurmd_pid="" watchdog_pid=""
keep=${RINGATTN_TEST_KEEP:-0}   # 1: leave the scratch folder for a post-mortem

pid_from() { [[ -s $1 ]] && tr -dc 0-9 <"$1"; }

stop_pid() {  # stop_pid NAME PID: TERM, wait up to 10 s, then KILL
  local name=$1 pid=$2
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  log "$name ($pid) did not stop on TERM; KILL"
  kill -KILL "$pid" 2>/dev/null
}

dump_logs() {
  local f
  for f in "$S"/log/*.log "$S"/*.out; do
    [[ -f $f ]] || continue
    echo "----- $f (last 40 lines)" >&2
    tail -n 40 "$f" >&2
  done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -n $watchdog_pid ]] && kill "$watchdog_pid" 2>/dev/null
  if ((rc != 0 && rc != 77)); then dump_logs; fi
  # Jobs first (so no step outlives its slurmd), then the daemons by their pids.
  if [[ -n $ctld_pid ]] && kill -0 "$ctld_pid" 2>/dev/null; then
    timeout 10 scancel --quiet --user=root >/dev/null 2>&1
    for _ in $(seq 1 25); do
      [[ -z $(timeout 5 squeue -h -o %i 2>/dev/null) ]] && break
      sleep 0.2
    done
  fi
  [[ -n $slurmd_pid ]] || slurmd_pid=$(pid_from "$S/slurmd.pid")
  [[ -n $ctld_pid ]] || ctld_pid=$(pid_from "$S/slurmctld.pid")
  [[ -n $munge_pid ]] || munge_pid=$(pid_from "$S/munge/munged.pid")
  stop_pid slurmd "$slurmd_pid"
  stop_pid slurmctld "$ctld_pid"
  stop_pid munged "$munge_pid"
  if [[ $keep == 1 ]]; then log "scratch kept: $S"; else rm -rf "$S"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "FAIL: interrupted (or over the time budget)"; exit 1' INT TERM
# The whole test stays under ctest's TIMEOUT (600 s), so that this script, not
# ctest's kill, ends it and the cleanup runs: TERM to ourselves after 420 s
# (a running step of at most 150 s finishes first).
budget=${RINGATTN_TEST_BUDGET:-420}
(
  trap 'kill "$sp" 2>/dev/null; exit 0' TERM
  sleep "$budget" & sp=$!
  wait "$sp" && kill -TERM $$
) >/dev/null 2>&1 &
watchdog_pid=$!

fail() { log "FAIL: $*"; exit 1; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll every 0.2 s
  local secs=$1 what=$2 end
  shift 2
  end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || fail "timed out after ${secs}s waiting for $what"
    sleep 0.2
  done
}

free_port() {  # a TCP port nothing listens on, from 20000-59999
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    if ! ss -Hltn "sport = :$p" 2>/dev/null | grep -q . && ! ss -Hltn "sport = :$((p + 1))" 2>/dev/null | grep -q .; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# ---- munge: own key, socket and pid in scratch, run as the munge user --------------
mkdir -p "$S/munge" "$S/log" "$S/state" "$S/spool"
head -c 1024 /dev/urandom >"$S/munge/munge.key"
chown -R munge: "$S/munge"
chmod 700 "$S/munge"
chmod 400 "$S/munge/munge.key"
sock=$S/munge/munge.socket.2
timeout 30 runuser -u munge -- munged --force \
  --key-file="$S/munge/munge.key" --socket="$sock" --pid-file="$S/munge/munged.pid" \
  --log-file="$S/munge/munged.log" --seed-file="$S/munge/munged.seed" ||
  fail "munged did not start (see $S/munge/munged.log)"
wait_for 20 "munged's socket" test -S "$sock"
munge_pid=$(pid_from "$S/munge/munged.pid")
wait_for 20 "a munge credential" bash -c "munge -S '$sock' -n </dev/null | unmunge -S '$sock'"
log "munged up (pid $munge_pid)"

# ---- slurm.conf: one node, this machine ----------------------------------------------
host=$(hostname -s)
cpus=$(nproc)
port=$(free_port) || fail "no free TCP port"
cat >"$SLURM_CONF" <<EOF
# generated by tests/launch/test_slurm.sh
ClusterName=ringattntest
SlurmctldHost=$host
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

# Both daemonise; their pids come from the pid files.
timeout 30 slurmctld -i || fail "slurmctld did not start"
wait_for 20 "slurmctld's pid file" test -s "$S/slurmctld.pid"
ctld_pid=$(pid_from "$S/slurmctld.pid")
timeout 30 slurmd || fail "slurmd did not start"
wait_for 20 "slurmd's pid file" test -s "$S/slurmd.pid"
slurmd_pid=$(pid_from "$S/slurmd.pid")
node_idle() { [[ $(timeout 5 sinfo -h -N -n "$host" -o %t 2>/dev/null) == idle ]]; }
wait_for 60 "node $host to be idle" node_idle
log "slurm up: slurmctld $ctld_pid, slurmd $slurmd_pid, node $host with $cpus CPUs, port $port"

# ---- the job's input and config ----------------------------------------------------------
if [[ $(id -u) -eq 0 ]]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
timeout 120 "$ringattn" gen --output "$S/in.h5" --n 512 --d 32 --heads 2 >/dev/null ||
  fail "ringattn gen failed"
# configs/smoke.toml's settings with this test's paths.
cat >"$S/job.toml" <<EOF
[input]
path = "$S/in.h5"

[output]
path = "$S/out.h5"
lse = true
overwrite = true

[attention]
causal = true

[ring]
partition = "auto"

[run]
threads = 0
metrics = "$S/metrics.json"
EOF

# ---- job 1: the CPU script, a small run -------------------------------------------
# --time=10 (minutes): the scripts' --signal=B:USR1@300 would otherwise come at
# once (Slurm sends it when less than lead time + ~30 s are left).
ntasks=2
overcommit=()
((ntasks > cpus)) && overcommit=(--overcommit)
sb=(--partition=test --account=test --nodes=1 --ntasks-per-node="$ntasks" --cpus-per-task=1
    "${overcommit[@]}" --time=10)
cd "$S" || fail "cd $S"
export RINGATTN=$ringattn
timeout 150 sbatch --wait --parsable "${sb[@]}" --output="$S/job-%j.out" "$sbatch_script" "$S/job.toml" >/dev/null
rc=$?
((rc == 124)) && fail "sbatch --wait did not return within 150 s"
((rc == 0)) || fail "the batch job exited with status $rc"
out=$(ls "$S"/job-*.out 2>/dev/null | head -n 1)
[[ -n $out ]] || fail "no job output file"
grep -q "srun exited with status 0" "$out" || fail "job log lacks 'srun exited with status 0'"
grep -q "2 ranks on 1 node" "$out" || fail "job log does not show 2 ranks on 1 node"
grep -q -- "--resume: no partial output" "$out" ||
  fail "job log does not show that the first run (--resume, no partial output) started afresh"
[[ -f $S/out.h5 ]] || fail "the job wrote no output file"
timeout 120 "$ringattn" verify --input "$S/in.h5" --output "$S/out.h5" ||
  fail "ringattn verify failed on the job's output"
log "job 1 passed: sbatch job exited 0 and its output verifies"

# ---- job 2: USR1 (the --signal=B:USR1@300 line's signal) stops, requeues, resumes ------
# A real run of several seconds in 8 chunks (one per K/V head). Once its partial
# output exists (ringattn's stop handlers are set by then), USR1 goes to the batch
# shell as Slurm sends it near the time limit; the trap forwards it through srun to
# the ranks, which stop after the chunk in hand (exit 7); the script requeues the
# job; the job's second run resumes the partial output (same job id, same log).
t2=$SECONDS
timeout 120 "$ringattn" gen --output "$S/big.h5" --heads 8 --n 16384 --d 32 --dtype f16 >/dev/null ||
  fail "ringattn gen (requeue job's input) failed"
cat >"$S/requeue.toml" <<EOF
[input]
path = "$S/big.h5"

[output]
path = "$S/big-out.h5"
lse = true

[attention]
causal = true
EOF
jobid=$(timeout 30 sbatch --parsable "${sb[@]}" --output="$S/requeue-%j.out" \
  "$sbatch_script" "$S/requeue.toml") || fail "sbatch (requeue job) failed"
jobid=${jobid%%;*}
rq_out=$S/requeue-$jobid.out
wait_for 60 "the requeue job's partial output" test -e "$S/.big-out.h5.partial"
timeout 10 scancel --signal=USR1 --batch "$jobid" || fail "scancel --signal=USR1 --batch failed"
job_field() {  # job_field NAME: NAME=value from `scontrol show job -o $jobid`
  timeout 5 scontrol show job -o "$jobid" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n 1
}
requeued() { (($(job_field Restarts) >= 1)); }
wait_for 60 "the job to be requeued (Restarts >= 1)" requeued
# A requeued job is not eligible again at once: Slurm (22.05, defaults) keeps
# it PENDING with Reason=BeginTime and EligibleTime = the requeue + 120 s (and
# resets its SubmitTime). A site's job just waits that out; the test moves the
# start time to now (scontrol update StartTime=now) once the first run's step
# is gone from the node.
state=$(job_field JobState) reason=$(job_field Reason) eligible=$(job_field EligibleTime)
log "job $jobid requeued: JobState=$state Reason=$reason EligibleTime=$eligible (now $(date +%FT%T))," \
    "node $(timeout 5 sinfo -h -N -n "$host" -o %t 2>/dev/null)"
# The first run's step must be gone before the second starts on the same node:
# the old slurmstepd lingers ~2 s after the requeue, and a new step 0 started
# meanwhile fails to bind the PMIx socket of the same name in the spool folder
# (stepd.slurm.pmix.JOB.0), and srun 22.05 then exits 0 although no task ran.
steps_gone() { ! pgrep -f "slurmstepd: \[$jobid\." >/dev/null; }
wait_for 60 "the first run's slurmstepd processes to end" steps_gone
wait_for 60 "node $host to be idle after the requeue" node_idle
log "the first run's steps are gone and the node is idle ($((SECONDS - t2)) s after submission)"
if [[ $(job_field JobState) == PENDING ]]; then
  timeout 10 scontrol update JobId="$jobid" StartTime=now ||
    fail "scontrol update JobId=$jobid StartTime=now failed"
fi
job_done() {  # the job has ended, however
  local st
  st=$(job_field JobState)
  [[ -n $st && ! $st =~ ^(PENDING|RUNNING|REQUEUE.*|COMPLETING|CONFIGURING|SUSPENDED|RESIZING)$ ]]
}
wait_for 90 "the requeued job to finish" job_done
[[ $(job_field JobState) == COMPLETED && $(job_field ExitCode) == 0:0 ]] ||
  fail "the requeued job ended $(job_field JobState) with exit code $(job_field ExitCode)"
grep -q "USR1 (time limit near): forwarded to the step" "$rq_out" ||
  fail "the requeue job's log does not show USR1 forwarded to the step"
grep -Eq "ringattn: stopped by SIGUSR1 after [0-9]+ of 8 chunks" "$rq_out" ||
  fail "the requeue job's log does not show ringattn stopped by SIGUSR1"
grep -q "srun exited with status 7" "$rq_out" || fail "the requeue job's first step did not exit 7"
grep -q "ringattn stopped (exit 7); requeueing job $jobid" "$rq_out" ||
  fail "the requeue job's log does not show the requeue"
# A stop comes at the next ring step: the resume continues whole chunks, or
# a chunk's ring steps, or both.
grep -Eq "ringattn: resumed from .*big-out.h5.partial: ([1-9][0-9]* of 8 chunks|[0-9]+ of 8 chunks and [1-9][0-9]* of [0-9]+ ring steps of the next) were already done" "$rq_out" ||
  fail "the requeue job's log does not show the second run resuming"
grep -q "srun exited with status 0" "$rq_out" || fail "the requeued run's step did not exit 0"
grep -q "run 2 (restarts 1)" "$rq_out" || fail "the requeue job's log does not show its second run"
[[ ! -e $S/.big-out.h5.partial ]] || fail "the partial output is still there after the resumed run"
timeout 120 "$ringattn" verify --input "$S/big.h5" --output "$S/big-out.h5" >/dev/null ||
  fail "ringattn verify failed on the requeued job's output"
log "job 2 passed: USR1 -> stopped ($(grep -Eo 'after [0-9]+ of 8 chunks[^;]*' "$rq_out")), requeued," \
    "resumed, verified ($((SECONDS - t2)) s)"

# ---- job 2b: where requeue is not allowed, exit 7 and resubmit by hand ----------------
# sbatch --no-requeue: `scontrol requeue` is refused, the script says so and
# exits 7; the same sbatch command again resumes the partial output.
t3=$SECONDS
manual=(--no-requeue --output="$S/manual-%j.out" "$sbatch_script" "$S/requeue.toml" --output "$S/big-out2.h5")
jobid=$(timeout 30 sbatch --parsable "${sb[@]}" "${manual[@]}") || fail "sbatch (no-requeue job) failed"
jobid=${jobid%%;*}
wait_for 60 "the no-requeue job's partial output" test -e "$S/.big-out2.h5.partial"
timeout 10 scancel --signal=USR1 --batch "$jobid" || fail "scancel --signal=USR1 --batch failed"
wait_for 60 "the no-requeue job to end" job_done
[[ $(job_field JobState) == FAILED && $(job_field ExitCode) == 7:0 ]] ||
  fail "the no-requeue job ended $(job_field JobState) with exit code $(job_field ExitCode), expected FAILED 7:0"
grep -q "scontrol requeue failed" "$S/manual-$jobid.out" ||
  fail "the no-requeue job's log does not say that the requeue failed"
timeout 150 sbatch --wait --parsable "${sb[@]}" "${manual[@]}" >/dev/null
rc=$?
((rc == 0)) || fail "the resubmitted no-requeue job exited with status $rc"
grep -q "ringattn: resumed from .*big-out2.h5.partial" "$S"/manual-*.out ||
  fail "the resubmitted job's log does not show it resuming"
timeout 120 "$ringattn" verify --input "$S/big.h5" --output "$S/big-out2.h5" >/dev/null ||
  fail "ringattn verify failed on the resubmitted job's output"
log "job 2b passed: no requeue allowed -> exit 7; the same sbatch again resumed and verified ($((SECONDS - t3)) s)"

# ---- job 3: the GPU script on this GPU-less node: --backend cuda refuses, exit 2 ------
gpu_script=$repo/launch/slurm/ringattn-gpu.sbatch
rm -f "$S/out.h5"
env -u RINGATTN_BACKEND timeout 150 sbatch --wait --parsable "${sb[@]}" --gpus-per-node=0 \
  --output="$S/gpu-%j.out" "$gpu_script" "$S/job.toml" >/dev/null
rc=$?
((rc == 124)) && fail "sbatch --wait (GPU script) did not return within 150 s"
((rc == 2)) || fail "the GPU script's job on a node without GPUs exited $rc, expected 2"
gpu_out=$(ls "$S"/gpu-*.out 2>/dev/null | head -n 1)
grep -q "backend cuda" "$gpu_out" || fail "the GPU script's log does not name backend cuda"
# (A build without the CUDA parts says that instead.)
grep -Eq "ringattn: usage error: --backend cuda: (no CUDA device on host|this ringattn was built without CUDA)" "$gpu_out" ||
  fail "the GPU script's log lacks the one-line 'no CUDA device' error"
# One line per rank at most, all the same line.
n_err=$(grep -c "usage error" "$gpu_out")
n_kinds=$(grep "usage error" "$gpu_out" | sort -u | wc -l)
((n_err >= 1 && n_err <= ntasks && n_kinds == 1)) ||
  fail "the GPU script's log has $n_err differing usage-error lines"
grep -q "srun exited with status 2" "$gpu_out" || fail "the GPU script did not pass the step's status 2 on"
[[ ! -e $S/out.h5 ]] || fail "the refused GPU job wrote an output"
log "job 3 passed: --backend cuda without a GPU: one-line usage error, job exit 2"

# ---- job 4: the GPU script with RINGATTN_BACKEND=cpu runs the CPU path ---------------
RINGATTN_BACKEND=cpu timeout 150 sbatch --wait --parsable "${sb[@]}" --gpus-per-node=0 \
  --output="$S/gpucpu-%j.out" "$gpu_script" "$S/job.toml" >/dev/null
rc=$?
((rc == 124)) && fail "sbatch --wait (GPU script, CPU backend) did not return within 150 s"
((rc == 0)) || fail "the GPU script's job with RINGATTN_BACKEND=cpu exited with status $rc"
grep -q "backend cpu" "$S"/gpucpu-*.out || fail "the GPU script's log does not say backend cpu"
timeout 120 "$ringattn" verify --input "$S/in.h5" --output "$S/out.h5" >/dev/null ||
  fail "ringattn verify failed on the GPU script's CPU-path output"
log "job 4 passed: the GPU script with RINGATTN_BACKEND=cpu ran to a verified output"

# ---- job 5: the GPU script's device per rank and the flags it passes -----------------
# A stand-in for ringattn records CUDA_VISIBLE_DEVICES and its arguments per
# node-local rank. Slurm sets no CUDA_VISIBLE_DEVICES here (no GPU gres), so the
# test sets the list a job would get.
printf '#!/bin/bash\necho "$CUDA_VISIBLE_DEVICES" >"%s/cvd.$CVD_CASE.$SLURM_LOCALID"\necho "$*" >"%s/args.$SLURM_LOCALID"\n' \
  "$S" "$S" >"$S/show-device.sh"
chmod 755 "$S/show-device.sh"
device_case() {  # device_case NAME EXPECTED-RANK-0 EXPECTED-RANK-1 [VAR=VALUE...]
  local name=$1 want=("$2" "$3") r got
  shift 3
  env -u CUDA_VISIBLE_DEVICES -u RINGATTN_BACKEND -u RINGATTN_GPU_BIND RINGATTN="$S/show-device.sh" \
    CVD_CASE="$name" "$@" timeout 150 sbatch --wait --parsable "${sb[@]}" --gpus-per-node=0 \
    --output="$S/gpudev-%j.out" "$gpu_script" "$S/job.toml" >/dev/null ||
    fail "the GPU script's device-choice job ($name) failed"
  for r in 0 1; do
    got=$(cat "$S/cvd.$name.$r" 2>/dev/null)
    [[ $got == "${want[r]}" ]] ||
      fail "device case $name: node-local rank $r saw CUDA_VISIBLE_DEVICES='$got', expected '${want[r]}'"
  done
}
device_case unset 0 1
device_case list 6 7 CUDA_VISIBLE_DEVICES=6,7
device_case single 3 3 CUDA_VISIBLE_DEVICES=3
device_case none 6,7 6,7 CUDA_VISIBLE_DEVICES=6,7 RINGATTN_GPU_BIND=none
grep -q -- "--resume --backend cuda" "$S/args.0" ||
  fail "the GPU script did not pass --resume --backend cuda (got: $(cat "$S/args.0"))"
log "job 5 passed: rank r sees entry r of CUDA_VISIBLE_DEVICES (r when unset), a single" \
    "GPU is kept, RINGATTN_GPU_BIND=none keeps the list; --resume --backend cuda passed"
log "PASS"
exit 0
