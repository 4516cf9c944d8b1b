#!/usr/bin/env bash
# Starts a throwaway single-node Slurm cluster on this machine (munged, slurmctld,
# slurmd; no systemd), submits launch/slurm/ringattn-cpu.sbatch with
# `sbatch --wait` on a small generated input (2 tasks), checks that the job
# exits 0 and that `ringattn verify` passes on its output, and stops all it
# started and removes its scratch folder, whatever happens.
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
  for f in "$S"/log/*.log "$S"/job-*.out; do
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

# ---- submit and wait --------------------------------------------------------------
ntasks=2
overcommit=()
((ntasks > cpus)) && overcommit=(--overcommit)
cd "$S" || fail "cd $S"
export RINGATTN=$ringattn
timeout 150 sbatch --wait --parsable --partition=test --account=test \
  --nodes=1 --ntasks-per-node=$ntasks --cpus-per-task=1 "${overcommit[@]}" \
  --time=5 --output="$S/job-%j.out" "$sbatch_script" "$S/job.toml"
rc=$?
((rc == 124)) && fail "sbatch --wait did not return within 150 s"
((rc == 0)) || fail "the batch job exited with status $rc"
out=$(ls "$S"/job-*.out 2>/dev/null | head -n 1)
[[ -n $out ]] || fail "no job output file"
grep -q "srun exited with status 0" "$out" || fail "job log lacks 'srun exited with status 0'"
grep -q "2 ranks on 1 node" "$out" || fail "job log does not show 2 ranks on 1 node"
[[ -f $S/out.h5 ]] || fail "the job wrote no output file"
timeout 120 "$ringattn" verify --input "$S/in.h5" --output "$S/out.h5" ||
  fail "ringattn verify failed on the job's output"
log "job 1 passed: sbatch job exited 0 and its output verifies"

# ---- USR1 (the --signal=B:USR1@300 line's signal) must not end the job ---------------
# A stand-in for ringattn that sleeps, so the signal surely lands mid-step; the
# batch shell's trap is to log it and wait on for the step.
printf '#!/bin/bash\ntouch "%s/step-started.$SLURM_PROCID"\nsleep 6\n' "$S" >"$S/slow-step.sh"
chmod 755 "$S/slow-step.sh"
jobid=$(RINGATTN=$S/slow-step.sh timeout 30 sbatch --parsable --partition=test --account=test \
  --nodes=1 --ntasks-per-node=$ntasks --cpus-per-task=1 "${overcommit[@]}" \
  --time=5 --output="$S/usr1-%j.out" "$sbatch_script" "$S/job.toml") || fail "sbatch (USR1 job) failed"
wait_for 60 "the USR1 job's step to start" test -e "$S/step-started.0"
timeout 10 scancel --signal=USR1 --batch "$jobid" || fail "scancel --signal=USR1 failed"
job_gone() { [[ -z $(timeout 5 squeue -h -j "$jobid" -o %i 2>/dev/null) ]]; }
wait_for 60 "the USR1 job to end" job_gone
usr1_out=$S/usr1-$jobid.out
grep -q "USR1: the time limit is near" "$usr1_out" || fail "the USR1 job's log does not show the trap"
grep -q "srun exited with status 0" "$usr1_out" || fail "the USR1 job's step did not run to its end with status 0"
log "job 2 passed: USR1 was trapped and the step ran on to status 0"

# ---- the GPU script's shape on this GPU-less node (it runs the CPU path) ---------------
rm -f "$S/out.h5"
timeout 150 sbatch --wait --parsable --partition=test --account=test \
  --nodes=1 --gpus-per-node=0 --ntasks-per-node=$ntasks --cpus-per-task=1 "${overcommit[@]}" \
  --time=5 --output="$S/gpu-%j.out" "$repo/launch/slurm/ringattn-gpu.sbatch" "$S/job.toml"
rc=$?
((rc == 124)) && fail "sbatch --wait (GPU script) did not return within 150 s"
((rc == 0)) || fail "the GPU script's job exited with status $rc"
gpu_out=$(ls "$S"/gpu-*.out 2>/dev/null | head -n 1)
grep -q "no GPU backend yet" "$gpu_out" || fail "the GPU script's log does not say it runs the CPU path"
timeout 120 "$ringattn" verify --input "$S/in.h5" --output "$S/out.h5" >/dev/null ||
  fail "ringattn verify failed on the GPU script's output"
log "job 3 passed: the GPU script ran the CPU path to a verified output"

# ---- the GPU script's device choice: CUDA_VISIBLE_DEVICES = SLURM_LOCALID per rank -----
printf '#!/bin/bash\necho "$CUDA_VISIBLE_DEVICES" >"%s/cvd.$SLURM_LOCALID"\n' "$S" >"$S/show-device.sh"
chmod 755 "$S/show-device.sh"
RINGATTN=$S/show-device.sh timeout 150 sbatch --wait --parsable --partition=test --account=test \
  --nodes=1 --gpus-per-node=0 --ntasks-per-node=$ntasks --cpus-per-task=1 "${overcommit[@]}" \
  --time=5 --output="$S/gpudev-%j.out" "$repo/launch/slurm/ringattn-gpu.sbatch" "$S/job.toml" >/dev/null ||
  fail "the GPU script's device-choice job failed"
for ((r = 0; r < ntasks; r++)); do
  [[ $(cat "$S/cvd.$r" 2>/dev/null) == "$r" ]] ||
    fail "node-local rank $r saw CUDA_VISIBLE_DEVICES='$(cat "$S/cvd.$r" 2>/dev/null)', expected $r"
done
log "job 4 passed: each node-local rank r saw CUDA_VISIBLE_DEVICES=r"
log "PASS"
exit 0
