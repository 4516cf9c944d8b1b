#!/usr/bin/env bash
# The service's measures (issue: the attention service), on this machine:
#   1. `mpirun -np 2 ringattn serve` with a resident 1M-token f16 context
#      (H = 8, H_kv = 2, D = 128), then build/bench/serve_load from a
#      separate process: decode latency against the memory bound, 64
#      concurrent clients against one at a time, a 4K context's round trip,
#      rank 0's memory over 10,000 requests (one JSON object, load.json);
#   2. 50 small batch jobs through the service (`submit --wait`, one after
#      another; then the same 50 queued at once) against 50 separate
#      `mpirun ringattn run` launches of the same configs: jobs per minute of
#      each and their ratios.
#
#   bench/serve_load.sh BUILD_DIR [WORK_DIR]     (needs ~2.5 GB of disk in WORK_DIR)
set -euo pipefail
build=$(cd "$1" && pwd)
work=${2:-/tmp/ringattn-serve-load}
bin=$build/ringattn
mpirun=(mpirun --oversubscribe)
export OMP_NUM_THREADS=1
mkdir -p "$work/run" && chmod 700 "$work/run" && cd "$work"
sock=$work/run/sock
[[ -f ctx.h5 ]] || "$bin" gen --output ctx.h5 --heads 8 --kv-heads 2 --n 1 --n-kv 1048576 \
  --d 128 --dtype f16 --seed 5 >/dev/null
"${mpirun[@]}" -np 2 "$bin" serve --socket "$sock" --data-dir "$work" --context big=ctx.h5 \
  --threads 1 --page-tokens "${PAGE_TOKENS:-2048}" >serve.out 2>serve.err &
pid=$!
trap 'kill -KILL $pid 2>/dev/null || true' EXIT
for _ in $(seq 3000); do grep -q "listening on" serve.out 2>/dev/null && break; sleep 0.2; done
grep -q "listening on" serve.out || { cat serve.err; echo "serve did not start" >&2; exit 1; }

"$build/bench/serve_load" --endpoint "$sock" --context big | tee load.json

# Batch jobs: the service against one mpirun launch per job.
"$bin" gen --output jobs_in.h5 --heads 2 --n 256 --d 32 --seed 9 --overwrite >/dev/null
jobs=${JOBS:-50}
rm -f served_*.h5 launched_*.h5
t0=$(date +%s.%N)
for i in $(seq "$jobs"); do
  printf '[input]\npath = "jobs_in.h5"\n[output]\npath = "served_%d.h5"\n[run]\nthreads = 1\n' "$i" >job.toml
  "$bin" submit --socket "$sock" --wait job.toml >/dev/null
done
t1=$(date +%s.%N)
# The same jobs queued at once (a pipeline's use): until the last is done.
rm -f served_*.h5
for i in $(seq "$jobs"); do
  printf '[input]\npath = "jobs_in.h5"\n[output]\npath = "served_%d.h5"\n[run]\nthreads = 1\n' "$i" >job.toml
  last=$("$bin" submit --socket "$sock" job.toml | awk '{print $2}')
done
until "$bin" query --socket "$sock" job_status --job "$last" | grep -q '"state": "done"'; do sleep 0.01; done
tq=$(date +%s.%N)
for i in $(seq "$jobs"); do
  "${mpirun[@]}" -np 2 "$bin" run --input jobs_in.h5 --output "launched_$i.h5" --threads 1 >/dev/null
done
t2=$(date +%s.%N)
h5diff -q served_1.h5 launched_1.h5 /o /o && same=true || same=false
awk -v a="$t0" -v b="$t1" -v q="$tq" -v c="$t2" -v n="$jobs" -v same="$same" 'BEGIN {
  s = b - a; w = q - b; m = c - q;
  printf "{\"jobs\": %d, \"service_one_by_one_per_min\": %.1f, \"service_queued_per_min\": %.1f, \"mpirun_per_min\": %.1f, \"ratio_one_by_one\": %.2f, \"ratio_queued\": %.2f, \"outputs_identical\": %s}\n",
         n, 60 * n / s, 60 * n / w, 60 * n / m, m / s, m / w, same }' | tee jobs.json
kill -USR1 "$pid"
wait "$pid"
