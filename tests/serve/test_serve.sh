#!/usr/bin/env bash
# The service end to end: starts `mpirun -np NP ringattn serve` on a Unix
# socket in a 0700 scratch directory (pages of 7 tokens, so every context
# spans every rank; --max-request-mb 4 and --queue 16 so the limits are
# reachable), runs one case against it, then stops it with SIGUSR1 to
# mpirun (forwarded to the ranks) or SIGTERM to the ranks (as scancel does)
# and checks that every rank exited 0. Every wait is bounded.
#
#   test_serve.sh RINGATTN CLIENT_TEST NP SCRATCH CASE
#   CASE: client  the C++ client suite (tests/serve/test_service_client.cpp)
#         python  the Python client's checks (tests/serve/test_python_client.py)
#         job     a batch job through `submit --wait`: its output bit-identical
#                 to `mpirun ringattn run` of the same config; a bad job fails
#                 with its reason while the service goes on; `query` works
#         drain   attends in flight when the stop signal comes are all answered;
#                 requests after it get "busy"; exit 0
#         hang    a rank stopped (SIGSTOP): the service ends within the comm
#                 timeout, naming the wait, and the client gets a fault reply
#         security  socket and directory modes, a directory of another mode
#                 refused, a second service on the same socket refused, TCP
#                 beyond loopback without a secret refused, a wrong secret denied
set -uo pipefail
bin=$1 client=$2 np=$3 scratch=$4 case=$5
case_name="serve_${case}_np$np"
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../common/script_lib.sh"
mpiexec=${MPIEXEC:-mpirun}
py=${H5PY_PYTHON:-/usr/bin/python3}
dir=$scratch/$case_name
rm -rf "$dir" && mkdir -p "$dir/run" && chmod 700 "$dir/run" && cd "$dir" || exit 1
sock=$dir/run/sock
pid=

# start_server [FLAGS...]: serve in the background; waits (bounded) for its
# "listening" line.
start_server() {
  "$mpiexec" ${MPIEXEC_NUMPROC_FLAG:--np} "$np" ${MPIEXEC_FLAGS:-} "$bin" serve --socket "$sock" \
    --data-dir "$dir" --page-tokens 7 --threads 1 --max-request-mb 4 --queue 16 \
    --comm-timeout "${comm_timeout:-120}" "$@" >serve.out 2>serve.err &
  pid=$!
  for _ in $(seq 600); do
    grep -q "listening on" serve.out 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { cat serve.out serve.err; fail "serve exited before listening"; }
    sleep 0.1
  done
  fail "serve did not listen within 60 s"
}

# stop_server [term]: SIGUSR1 to mpirun (which forwards it), or with `term`
# SIGTERM to every rank (as scancel does); every rank must end, exit 0,
# within 60 s.
stop_server() {
  if [[ ${1:-} == term ]]; then
    local p
    for p in $(pgrep -P "$pid"); do kill -TERM "$p"; done
  else
    kill -USR1 "$pid"
  fi
  local rc=0
  for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid"
    fail "serve did not stop within 60 s of SIGUSR1"
  fi
  wait "$pid" || rc=$?
  pid=
  [[ $rc -eq 0 ]] || { cat serve.err; fail "serve exited $rc after SIGUSR1, expected 0"; }
}
trap '[[ -n $pid ]] && kill -KILL $pid 2>/dev/null' EXIT

q() { timeout 60 "$bin" query --socket "$sock" --timeout 30 "$@"; }

case $case in
  client)
    start_server
    timeout 500 "$client" --endpoint "$sock" --data-dir "$dir" || fail "client suite failed"
    stop_server term
    ;;
  python)
    "$py" -c "import zmq, numpy" 2>/dev/null || { echo "SKIP: $py lacks zmq or numpy"; exit 77; }
    start_server
    timeout 300 "$py" "$here/test_python_client.py" --endpoint "ipc://$sock" \
      || fail "Python client checks failed"
    stop_server
    ;;
  job)
    expect 0 "$bin" gen --output in.h5 --batch 1 --heads 2 --n 300 --d 16 --seed 3
    cat >job.toml <<TOML
[input]
path = "in.h5"
[output]
path = "served.h5"
lse = true
[attention]
causal = true
TOML
    sed 's/served.h5/batch.h5/' job.toml >batch.toml
    expect 0 "$mpiexec" ${MPIEXEC_NUMPROC_FLAG:--np} "$np" ${MPIEXEC_FLAGS:-} "$bin" run \
      --config batch.toml --threads 1
    # A context named at start (any path: the command line is the user's own).
    start_server --context "pre=$dir/in.h5"
    expect 0 q list
    grep -q '"name": "pre"' out.txt && grep -q '"tokens": 300' out.txt \
      || fail "the --context given at start is not listed with its 300 tokens"
    expect 0 timeout 120 "$bin" submit --socket "$sock" --wait job.toml
    grep -q '"state": "done"' out.txt || fail "the job did not end done"
    h5diff -q served.h5 batch.h5 /o /o || fail "the service's o differs from the batch path's"
    h5diff -q served.h5 batch.h5 /lse /lse || fail "the service's lse differs from the batch path's"
    # The same output again: refused (the batch path's rule), the service goes on.
    expect 1 timeout 120 "$bin" submit --socket "$sock" --wait job.toml
    grep -q '"state": "failed"' out.txt || fail "a job on an existing output did not fail"
    grep -q 'exists' out.txt || fail "the failed job does not say why"
    # Paths outside the data directory are refused at submission.
    sed 's#"served.h5"#"/tmp/escape.h5"#' job.toml >escape.toml
    expect 2 timeout 60 "$bin" submit --socket "$sock" escape.toml
    grep -q "outside" err.txt || fail "an escaping output path was not refused"
    expect 0 q status
    grep -q '"done": 1' out.txt || fail "status does not count the done job"
    expect 0 q job_status --job 1
    grep -q '"chunks_done"' out.txt || fail "job_status has no report"
    expect 2 q job_status --job 99
    expect 2 q frobnicate
    expect 0 q ping
    stop_server
    ;;
  drain)
    "$py" -c "import zmq, numpy" 2>/dev/null || { echo "SKIP: $py lacks zmq or numpy"; exit 77; }
    start_server
    # 40 attends in flight when the stop comes: every one answered (ok, or
    # busy once the stop was seen), none lost, and every rank exits 0.
    "$py" - "ipc://$sock" "$here/../../clients/python" >drain.out 2>&1 <<'PY' &
import json, sys, time
import numpy as np, zmq
sys.path.insert(0, sys.argv[2])
from ringattn_client import Client
ep = sys.argv[1]
rng = np.random.default_rng(1)
k = rng.standard_normal((2, 3000, 64), dtype=np.float32)
with Client(ep) as c:
    c.create("drain", 2, 64, k=k, v=k)
s = zmq.Context().socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.connect(ep)
q = rng.standard_normal((4, 64, 64), dtype=np.float32).tobytes()
head = {"op": "attend", "context": "drain",
        "arrays": [{"name": "q", "dtype": "f32", "shape": [4, 64, 64]}]}
for i in range(40):
    head["id"] = i
    s.send_multipart([b"", json.dumps(head).encode(), q])
open("sent", "w").close()
got = {}
deadline = time.time() + 60
while len(got) < 40 and time.time() < deadline:
    if s.poll(1000):
        f = s.recv_multipart()
        h = json.loads(f[1])
        got[h["id"]] = h["ok"] or h.get("class")
ok = sum(1 for v in got.values() if v is True)
busy = sum(1 for v in got.values() if v == "busy")
print(f"replies {len(got)} ok {ok} busy {busy}")
sys.exit(0 if len(got) == 40 and ok + busy == 40 and ok >= 1 else 1)
PY
    client_pid=$!
    for _ in $(seq 300); do [[ -e sent ]] && break; sleep 0.1; done
    [[ -e sent ]] || { cat drain.out; fail "the drain client did not send"; }
    stop_server
    rc=0
    wait "$client_pid" || rc=$?
    cat drain.out
    [[ $rc -eq 0 ]] || fail "requests in flight at the stop were lost or failed"
    ;;
  hang)
    # A hung rank (SIGSTOP): the next collective request ends the service
    # within the comm timeout, with a line naming the wait, and the client
    # gets an error reply, not a hang.
    comm_timeout=3 start_server
    worker=
    for p in $(pgrep -f -- "serve --socket $sock"); do
      tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1" && worker=$p
    done
    [[ -n $worker ]] || fail "no rank 1 process found"
    kill -STOP "$worker"
    expect nonzero timeout 60 "$bin" query --socket "$sock" --timeout 30 \
      --request '{"op": "create", "context": "x", "heads_kv": 1, "head_dim": 4}'
    grep -q "fault" err.txt || fail "the client did not get a fault reply"
    rc=0
    for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && fail "the service did not end within 60 s of the hang"
    wait "$pid" || rc=$?
    pid=
    kill -KILL "$worker" 2>/dev/null
    [[ $rc -ne 0 ]] || fail "the service exited 0 after a hung rank"
    grep -qi "timed out\|timeout" serve.err || { cat serve.err; fail "no line names the timeout"; }
    ;;
  security)
    start_server
    [[ $(stat -c %a "$sock") == 600 ]] || fail "socket mode $(stat -c %a "$sock"), expected 600"
    [[ $(stat -c %a "$dir/run") == 700 ]] || fail "socket directory is not 700"
    # A second service on the same socket: refused, the first unharmed.
    expect 2 timeout 60 "$mpiexec" -np 1 "$bin" serve --socket "$sock" --data-dir "$dir"
    grep -q "another service listens" err.txt || fail "a second service was not refused"
    expect 0 q ping
    stop_server
    mkdir -p open && chmod 755 open
    expect 2 timeout 60 "$mpiexec" -np 1 "$bin" serve --socket "$dir/open/sock"
    grep -q "open to other users" err.txt || fail "a 0755 socket directory was accepted"
    expect 2 timeout 60 "$mpiexec" -np 1 "$bin" serve --tcp 0.0.0.0:0
    grep -q "secret-file" err.txt || fail "TCP beyond loopback without a secret was accepted"
    printf 'a-secret-of-enough-length\n' >secret && chmod 644 secret
    expect 2 timeout 60 "$mpiexec" -np 1 "$bin" serve --tcp 127.0.0.1:0 --secret-file secret
    grep -q "0600" err.txt || fail "a secret file others can read was accepted"
    # TCP on loopback with a secret: a wrong or missing secret is denied.
    chmod 600 secret
    printf 'another-secret-of-length\n' >wrong && chmod 600 wrong
    port=$((20000 + RANDOM % 20000))
    "$mpiexec" -np 1 "$bin" serve --tcp "127.0.0.1:$port" --secret-file secret \
      --data-dir "$dir" >serve.out 2>serve.err &
    pid=$!
    for _ in $(seq 600); do grep -q "listening on" serve.out 2>/dev/null && break; sleep 0.1; done
    grep -q "listening on" serve.out || { cat serve.err; fail "TCP service did not listen"; }
    expect 0 timeout 60 "$bin" query --endpoint "tcp://127.0.0.1:$port" --secret-file secret ping
    expect nonzero timeout 60 "$bin" query --endpoint "tcp://127.0.0.1:$port" --secret-file wrong ping
    grep -q "secret" err.txt || fail "a wrong secret was not denied"
    expect nonzero timeout 60 "$bin" query --endpoint "tcp://127.0.0.1:$port" ping
    stop_server
    ;;
  *)
    fail "unknown case $case"
    ;;
esac
echo "PASS [$case_name]"
