#!/usr/bin/env bash
# The ring across real (virtual) network links, one case per call:
#
#   netns_ring.sh RINGATTN SCRATCH_DIR CASE
#
# Every MPI rank runs in a network namespace of its own (ra_<pid>_0 ..
# ra_<pid>_{P-1}), each joined by a veth pair to a Linux bridge in one more
# namespace (ra_<pid>_br), addresses 10.213.<pid % 250>.<rank + 1>/24 that
# exist only inside those namespaces. Open MPI runs over TCP only (btl
# tcp,self, both btl and oob restricted to that subnet); mpirun runs in rank
# 0's namespace and reaches the others through a generated plm_rsh_agent
# that maps a host address to its namespace and runs Open MPI's daemon there
# with `ip netns exec`. Links are shaped with tc's tbf. docs/network.md
# describes the harness and the figures measured with it.
#
# CASE is one of:
#   hosts         3 namespaces come up; each rank runs in its own (its
#                 network namespace, address and host name are checked), Open
#                 MPI's daemons start through the agent, and a small
#                 ring at P = 3 sends its blocks over the veths
#   shaped_bench  `bench ring` at P = 2 over a 1 Gbit/s tbf link: the hop's
#                 measured bandwidth shows the shaping took effect
#   cut_link      a causal `run` at P = 2 whose link is cut mid-run (the
#                 bridge port taken down): the job ends within the comm
#                 timeout plus a margin, rank 0 prints one error line,
#                 nothing is committed; with the link back, `--resume`
#                 finishes it and o is bit-identical to an uncut run
#   lossy_link    a causal `run` at P = 2 over 1 Gbit/s links that drop 2%
#                 of their packets at random (nftables in each rank's
#                 namespace, NETNS_LOSS_PERMILLE, default 20; this kernel has
#                 no netem): `verify` passes on its output, the
#                 drop counters show packets were lost, and `bench ring`
#                 over the same links prints the hop's bandwidth under loss
#   table         (not a ctest case; about 30 s) the figures of docs/network.md:
#                 bench ring at P = 2 and 3, unshaped, 10 and 1 Gbit/s, and a
#                 sweep of N at 1 Gbit/s; one line per run on stdout
#   plan_check    (not a ctest case; about a minute) docs/scaling.md's check
#                 of `ringattn plan` across the namespaces: bench ring at
#                 P = 2 and 3 at 8192 tokens per rank over 1 Gbit/s (the hop
#                 hidden), 4096 over 100 Mbit/s (exposed) and 2048 over
#                 1 Gbit/s (NETNS_PLAN_POINTS, LINK:TOKENS_PER_RANK ...), each
#                 beside the plan's prediction: the link measured by
#                 `plan --measure-link` across the namespaces, the kernel
#                 rate by the plan outside them (one thread); one
#                 line per run on stdout
#
# The case runs in SCRATCH_DIR/CASE, emptied first. Exit 0 on success, 1 on
# a failed check, 77 (skipped, with a one-line reason) when not root, when
# `ip netns add` fails (no CAP_SYS_ADMIN, no netns support), when mpirun,
# ip or tc is missing, when tbf is not in the kernel, (lossy_link) when nft
# is missing or the kernel has no nf_tables, or (cut_link, lossy_link) when
# the Python cannot import h5py and numpy. Every namespace, link and
# process the case made is removed on any exit; every launch is bounded,
# and all of a case's within NETNS_CASE_BUDGET seconds (default 100, table
# 900), so that it fails and cleans up before ctest's TIMEOUT (120) would
# kill it with no cleanup. Environment: MPIEXEC
# (default mpirun; Open MPI: the launch uses its plm_rsh_agent and MCA
# names), MPIEXEC_NUMPROC_FLAG (default -n), PYTHON or H5PY_PYTHON (default
# /usr/bin/python3), NETNS_CUT_N (cut_link's tokens, default 32768);
# table: NETNS_TABLE_P (default "2 3"), NETNS_TABLE_RATES (default "none
# 10gbit 1gbit"), NETNS_TABLE_TOKENS (tokens per rank of the 1 Gbit/s sweep,
# default "512 1024 2048 4096").
set -euo pipefail
# shellcheck source=SCRIPTDIR/../common/script_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common/script_lib.sh"

case_args "$@"
mpiexec=${MPIEXEC:-mpirun}
[[ $case_name == table || $case_name == plan_check ]] && budget_default=900 || budget_default=100
budget_end=$((SECONDS + ${NETNS_CASE_BUDGET:-$budget_default}))
np_flag=${MPIEXEC_NUMPROC_FLAG:--n}
py=${PYTHON:-${H5PY_PYTHON:-/usr/bin/python3}}
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1}
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

enter_case_dir

# Names and addresses. Each run has its own bridge, so two runs whose pids
# give the same subnet still never see each other's addresses.
tag=ra_$$
subnet=10.213.$(($$ % 250))
br_ns=${tag}_br
ns=()    # rank r's namespace: ns[r], address $subnet.$((r + 1))
made=()  # every namespace made, for the cleanup
job_pid=""

# On any exit: end what still runs in our namespaces (only processes this
# script started: its mpirun, Open MPI's daemons and the ranks), then delete
# the namespaces; deleting one deletes the veth ends inside it, and the
# bridge namespace takes the bridge with it.
teardown() {
  local n p
  [[ -z $job_pid ]] || kill -9 "$job_pid" 2>/dev/null || true
  job_pid=""
  for n in "${made[@]}"; do
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  done
  for n in "${made[@]}"; do
    timeout 5 bash -c "while [[ -n \$(ip netns pids $n 2>/dev/null) ]]; do sleep 0.1; done" || true
    ip netns del "$n" 2>/dev/null || true
  done
  made=()
  ns=()
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  teardown
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

need_tools() {
  [[ $(id -u) -eq 0 ]] || skip "not root (network namespaces need CAP_SYS_ADMIN)"
  command -v ip >/dev/null || skip "ip (iproute2) is not installed"
  command -v "$mpiexec" >/dev/null || skip "$mpiexec is not installed"
}

# now_ms: wall-clock milliseconds.
now_ms() {
  local t=${EPOCHREALTIME/[.,]/}
  echo $((t / 1000))
}

# in_ns R CMD...: CMD in rank R's namespace.
in_ns() {
  local r=$1
  shift
  ip netns exec "${ns[r]}" "$@"
}

# reachable R: rank 0's namespace reaches rank R's address (a TCP connect to
# a closed port: "refused" means the packet went there and back).
reachable() {
  local msg
  msg=$(timeout 2 ip netns exec "${ns[0]}" bash -c "exec 3<>/dev/tcp/$subnet.$(($1 + 1))/9" 2>&1) && return 0
  [[ $msg == *refused* ]]
}

# wait_reachable: every rank's address answers from rank 0's (bounded).
wait_reachable() {
  local r deadline=$((SECONDS + 10))
  for ((r = 1; r < ${#ns[@]}; ++r)); do
    until reachable "$r"; do
      ((SECONDS < deadline)) || fail "rank $r's address $subnet.$((r + 1)) does not answer from rank 0's namespace"
      sleep 0.2
    done
  done
}

# setup_net P: P rank namespaces on one bridge, the hostfile (one slot per
# address) and the launch agent. tcp_retries2=3 in each namespace: TCP gives
# up on a connection whose data goes unacknowledged after about 3 s instead
# of Linux's default 15 minutes, so mpirun's own link to a cut-off daemon
# fails and mpirun exits (see docs/network.md, "A cut link").
setup_net() {
  local np=$1 r cases=""
  if ! ip netns add "$br_ns" 2>netns_err.txt; then
    skip "ip netns add failed: $(head -n1 netns_err.txt)"
  fi
  made+=("$br_ns")
  ip -n "$br_ns" link set lo up
  ip -n "$br_ns" link add br0 type bridge
  ip -n "$br_ns" link set br0 up
  : >hosts
  for ((r = 0; r < np; ++r)); do
    ns[r]=${tag}_$r
    ip netns add "${ns[r]}"
    made+=("${ns[r]}")
    ip -n "${ns[r]}" link set lo up
    in_ns "$r" sysctl -qw net.ipv4.tcp_retries2=3
    ip -n "$br_ns" link add "p$r" type veth peer name ra0 netns "${ns[r]}"
    ip -n "$br_ns" link set "p$r" master br0
    ip -n "$br_ns" link set "p$r" up
    ip -n "${ns[r]}" addr add "$subnet.$((r + 1))/24" dev ra0
    ip -n "${ns[r]}" link set ra0 up
    echo "$subnet.$((r + 1)) slots=1" >>hosts
    cases+="  $subnet.$((r + 1))) ns=${ns[r]} name=${ns[r]//_/-} ;;"$'\n'
  done
  # Open MPI runs "agent [OPTIONS] HOST COMMAND...", COMMAND being its
  # daemon's command line (orted and its arguments), as it would for ssh.
  # The daemon gets the namespace's own host name too (a UTS namespace,
  # ra-<pid>-<r>): Open MPI keys its session directory on the host name, and
  # daemons sharing one race on the topology file there (hwloc.sm; orted
  # crashed in hwloc_shmem_topology_write at P = 3 without this).
  cat >agent.sh <<EOF
#!/bin/sh
# plm_rsh_agent made by netns_ring.sh: runs Open MPI's daemon command in the
# network namespace that holds HOST's address.
echo "\$*" >>'$dir/agent.log'
while [ "\${1#-}" != "\$1" ]; do shift; done
host=\$1
shift
case \$host in
$cases  *) echo "netns agent: \$host is not an address of this test" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" unshare --uts /bin/sh -c 'hostname "\$0" && exec /bin/sh -c "\$1"' "\$name" "\$*"
EOF
  chmod +x agent.sh
  : >agent.log
  wait_reachable
}

# shape RATE: tbf at RATE on both directions of every rank's link (the
# rank's veth egress and the bridge port's egress towards the rank);
# "none" removes it. Burst: 1 ms at the rate (at least 64 KB, a GSO frame).
shape() {
  local rate=$1 r burst
  for ((r = 0; r < ${#ns[@]}; ++r)); do
    if [[ $rate == none ]]; then
      tc -n "${ns[r]}" qdisc del dev ra0 root 2>/dev/null || true
      tc -n "$br_ns" qdisc del dev "p$r" root 2>/dev/null || true
      continue
    fi
    burst=$(($(rate_bits "$rate") / 8000))
    ((burst >= 65536)) || burst=65536
    tc -n "${ns[r]}" qdisc replace dev ra0 root tbf rate "$rate" burst "$burst" latency 50ms 2>tc_err.txt ||
      skip "tc tbf refused: $(head -n1 tc_err.txt)"
    tc -n "$br_ns" qdisc replace dev "p$r" root tbf rate "$rate" burst "$burst" latency 50ms
  done
}

rate_bits() {  # 1gbit -> 1000000000
  local v=${1%bit}
  case $v in
    *g) echo $((${v%g} * 1000000000)) ;;
    *m) echo $((${v%m} * 1000000)) ;;
    *) echo "$v" ;;
  esac
}

need_tc() {
  command -v tc >/dev/null || skip "tc (iproute2) is not installed"
}

need_nft() {
  command -v nft >/dev/null || skip "nft (nftables) is not installed"
}

# lose PERMILLE: every rank's namespace drops that share of the packets it
# sends on its veth, at random, counted (nftables: tc's netem and gact are
# not in this kernel).
lose() {
  local r
  for ((r = 0; r < ${#ns[@]}; ++r)); do
    in_ns "$r" nft add table inet ra_loss 2>nft_err.txt ||
      skip "nft cannot make a table here: $(head -n1 nft_err.txt)"
    in_ns "$r" nft add chain inet ra_loss out '{ type filter hook output priority 0; }'
    in_ns "$r" nft add rule inet ra_loss out oifname ra0 numgen random mod 1000 '<' "$1" counter drop
  done
}

# dropped: packets the loss rules dropped, summed over the ranks.
dropped() {
  local r n total=0
  for ((r = 0; r < ${#ns[@]}; ++r)); do
    n=$(in_ns "$r" nft list chain inet ra_loss out | sed -n 's/.*counter packets \([0-9]*\).*/\1/p')
    total=$((total + ${n:-0}))
  done
  echo "$total"
}

# ns_mpirun NP SECONDS CMD...: CMD on NP ranks, rank r in namespace r,
# mpirun itself in rank 0's (with its host name, as the agent gives the
# others), ended after SECONDS or when the case's budget runs out (then
# killed 5 s later). Open MPI's session directories go under the scratch
# directory.
ns_mpirun() {
  local np=$1 limit=$2 left=$((budget_end - SECONDS - 6))
  shift 2
  ((left > 0)) || { echo "netns_ring.sh: the case's time budget is spent" >&2; return 124; }
  ((limit <= left)) || limit=$left
  # shellcheck disable=SC2016 # expanded by that sh
  timeout -k 5 "$limit" ip netns exec "${ns[0]}" unshare --uts \
    sh -c 'hostname "$0" && exec "$@"' "${ns[0]//_/-}" \
    "$mpiexec" "$np_flag" "$np" --hostfile "$dir/hosts" --bind-to none \
    --mca orte_tmpdir_base "$dir/ompi" --mca plm_rsh_agent "$dir/agent.sh" --mca btl tcp,self \
    --mca btl_tcp_if_include "$subnet.0/24" --mca oob_tcp_if_include "$subnet.0/24" "$@"
}

# tx_bytes R: bytes sent so far on rank R's veth.
tx_bytes() {
  in_ns "$1" cat /sys/class/net/ra0/statistics/tx_bytes
}

# json FILE EXPR: a value from a JSON report (EXPR over j, in Python).
json() {
  "$py" -c 'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# Each rank prints its rank, network namespace and address (to stderr),
# then becomes CMD: the check covers ringattn's ranks themselves.
# shellcheck disable=SC2016 # expanded by each rank's sh
whereami='echo "where rank=$OMPI_COMM_WORLD_RANK host=$(hostname) net=$(readlink /proc/self/ns/net) addr=$(ip -o -4 addr show dev ra0 | awk "{print \$4}")" >&2; exec "$@"'

case_hosts() {
  need_tools
  local np=3 r root_net want got tx0=() bytes
  setup_net $np
  root_net=$(readlink /proc/self/ns/net)
  for ((r = 0; r < np; ++r)); do tx0[r]=$(tx_bytes "$r"); done
  expect 0 ns_mpirun $np 60 sh -c "$whereami" sh "$bin" bench ring --n 1536 --d 32 --heads 2 \
    --threads 1 --no-baseline --p2p-iters 2 --json
  cp out.txt bench.json
  [[ $(grep -c '^where rank=' err.txt) -eq $np ]] || fail "expected $np 'where' lines from the ranks"
  for ((r = 0; r < np; ++r)); do
    want=$(in_ns "$r" readlink /proc/self/ns/net)
    got=$(grep "^where rank=$r " err.txt) || fail "no line from rank $r"
    [[ $want != "$root_net" ]] || fail "namespace ${ns[r]} is the root namespace"
    [[ $got == *" net=$want "* ]] || fail "rank $r is not in ${ns[r]} ($want): $got"
    [[ $got == *" host=${ns[r]//_/-} "* ]] || fail "rank $r does not have host name ${ns[r]//_/-}: $got"
    [[ $got == *" addr=$subnet.$((r + 1))/24" ]] || fail "rank $r does not have address $subnet.$((r + 1)): $got"
    echo "rank $r: namespace ${ns[r]} ($want), host ${ns[r]//_/-}, $subnet.$((r + 1))"
  done
  [[ $(grep '^where rank=' err.txt | sed 's/.* net=\([^ ]*\).*/\1/' | sort -u | wc -l) -eq $np ]] ||
    fail "the ranks do not have $np distinct network namespaces"
  # Ranks 1 and 2 came up through the agent (rank 0 is mpirun's own node).
  [[ $(wc -l <agent.log) -eq $((np - 1)) ]] || fail "the agent launched $(wc -l <agent.log) daemons, expected $((np - 1))"
  for ((r = 1; r < np; ++r)); do
    grep -q "^$subnet.$((r + 1)) .*orted" agent.log || fail "the agent did not start a daemon for $subnet.$((r + 1))"
  done
  [[ $(json bench.json 'j["ranks"]') -eq $np ]] || fail "bench ring did not run on $np ranks"
  # Each rank sent its blocks to the next over its veth.
  bytes=$(json bench.json 'int(j["bytes_sent_total"]) // len(j["compute_s"])')
  for ((r = 0; r < np; ++r)); do
    (($(tx_bytes "$r") - tx0[r] >= bytes)) ||
      fail "rank $r's veth sent $(($(tx_bytes "$r") - tx0[r])) bytes, less than its ring blocks ($bytes)"
  done
  echo "ring at P = $np over the veths: $bytes bytes of blocks per rank, p2p $(json bench.json '"%.2f" % j["p2p"]["algbw_GBps"]') GB/s"
}

# bench P N RATE [ARGS...]: bench ring --json at P over links shaped at RATE,
# the report in bench_P_N_RATE.json; prints one summary line.
bench() {
  local np=$1 n=$2 rate=$3
  shift 3
  shape "$rate"
  expect 0 ns_mpirun "$np" 120 "$bin" bench ring --n "$n" --d 64 --heads 4 --threads 1 --json "$@"
  cp out.txt "bench_${np}_${n}_${rate}.json"
  "$py" - "bench_${np}_${n}_${rate}.json" "$rate" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
st = max(s["compute_s_max"] for s in j["steps"])
eff = j.get("efficiency")
print("P %d  link %-7s  N %6d  tokens/rank %5d  step compute %.4f s  exposed wait %.4f s  overlap %.3f"
      "  efficiency %s  p2p %.3f Gbit/s (%.1f MB hop)" % (
          j["ranks"], sys.argv[2], j["n"], j["n"] // j["ranks"], st, max(j["exposed_wait_s"]),
          j["overlap"], "%.3f" % eff if eff is not None else "-", j["p2p"]["algbw_GBps"] * 8,
          j["p2p"]["bytes"] / 1e6))
EOF
}

case_shaped_bench() {
  need_tools
  need_tc
  local gbit sent hop
  setup_net 2
  # For the record: the same problem unshaped (not checked: it is whatever
  # the veths and this machine's load give).
  bench 2 4096 none --no-baseline --p2p-iters 10
  bench 2 4096 1gbit --no-baseline --p2p-iters 10
  gbit=$(json bench_2_4096_1gbit.json 'j["p2p"]["algbw_GBps"] * 8')
  "$py" -c "import sys; sys.exit(not 0.3 < $gbit < 1.2)" ||
    fail "the hop over a 1 Gbit/s link measured $gbit Gbit/s, outside (0.3, 1.2): the shaping did not take effect"
  # The hops went through the shaped qdisc.
  hop=$(json bench_2_4096_1gbit.json 'j["p2p"]["bytes"]')
  sent=$(tc -s -n "${ns[0]}" qdisc show dev ra0 | sed -n 's/^ *Sent \([0-9]*\) bytes.*/\1/p' | head -n1)
  ((sent >= 10 * hop)) || fail "rank 0's tbf passed $sent bytes, less than the 10 timed hops ($((10 * hop)))"
  echo "shaped to 1 Gbit/s: the hop measured $(printf %.3f "$gbit") Gbit/s; rank 0's tbf passed $sent bytes"
  # The planner's own measurement of the same link agrees.
  expect 0 ns_mpirun 2 60 "$bin" plan --n 8192 --d 64 --heads 4 --ranks 2 --rate 100 \
    --measure-link --json
  gbit=$(json out.txt 'j["machine"]["bandwidth_gbps"]')
  "$py" -c "import sys; sys.exit(not 0.3 < $gbit < 1.2)" ||
    fail "plan --measure-link over a 1 Gbit/s link measured $gbit Gbit/s, outside (0.3, 1.2)"
  echo "plan --measure-link: $(printf %.3f "$gbit") Gbit/s"
}

case_cut_link() {
  need_tools
  need_h5py
  local n=${NETNS_CUT_N:-32768} tmo=5 margin=20 limit=60 rc=0 t0 t_err="" elapsed done_chunks deadline
  local run=(run --input in.h5 --causal --threads 1 --comm-timeout "$tmo" --checkpoint-interval 0)
  setup_net 2
  expect 0 "$bin" gen --n "$n" --heads 4 --d 64 -o in.h5
  # The uncut run over the same namespaces, for the comparison.
  t0=$(now_ms)
  expect 0 ns_mpirun 2 "$limit" "$bin" "${run[@]}" --output ref.h5 --progress none
  echo "uncut run: $(($(now_ms) - t0)) ms"
  # The cut run, in the background: progress lines tell how far it is.
  ns_mpirun 2 "$limit" "$bin" "${run[@]}" --output o.h5 --progress lines --progress-interval 0.5 \
    >cut_out.txt 2>cut_err.txt &
  job_pid=$!
  # Cut once at least a chunk and a half of the 4 is done, so that chunk 0
  # is recorded in the partial output.
  deadline=$((SECONDS + 60))
  while :; do
    done_chunks=$(grep -so 'chunk [0-9.]* of' cut_err.txt | tail -n1 | awk '{print $2}' || true)
    [[ -n $done_chunks ]] && "$py" -c "import sys; sys.exit(not $done_chunks >= 1.5)" && break
    kill -0 "$job_pid" 2>/dev/null || { cp cut_err.txt err.txt; fail "the run ended before the link was cut"; }
    ((SECONDS < deadline)) || fail "the run did not reach chunk 1.5 within 60 s"
    sleep 0.1
  done
  ip -n "$br_ns" link set p1 down
  t0=$(now_ms)
  # Until the job ends (ns_mpirun's timeout bounds it), noting when rank 0's
  # error line comes.
  deadline=$((SECONDS + limit + 10))
  while kill -0 "$job_pid" 2>/dev/null && ((SECONDS < deadline)); do
    [[ -n $t_err ]] || ! grep -q '^ringattn: fault error' cut_err.txt || t_err=$(($(now_ms) - t0))
    sleep 0.1
  done
  wait "$job_pid" || rc=$?
  elapsed=$(($(now_ms) - t0))
  job_pid=""
  cp cut_out.txt out.txt
  cp cut_err.txt err.txt
  echo "link cut at chunk $done_chunks of 4; rank 0's error line after ${t_err:-?} ms; the job exited $rc after $elapsed ms"
  [[ $rc -ne 0 ]] || fail "the job exited 0 with its link cut"
  [[ $rc -ne 124 && $rc -ne 137 ]] || fail "the job did not end by itself (ended by timeout)"
  ((elapsed <= (tmo + margin) * 1000)) ||
    fail "the job took $elapsed ms to end after the cut, more than --comm-timeout $tmo s + $margin s"
  one_error_line 'fault error: rank 0 '
  grep -q '^ringattn: fault error: rank 0 .*--comm-timeout.*peer' err.txt ||
    fail "rank 0's error line does not name the timed-out communication and the peer"
  echo "rank 0: $(grep '^ringattn: fault error' err.txt)"
  [[ ! -e o.h5 ]] || fail "the cut run committed o.h5"
  [[ -e .o.h5.partial ]] || fail "the cut run left no partial output for --resume"
  # Nothing of the job is left in the namespaces.
  timeout 10 bash -c "while [[ -n \$(ip netns pids ${ns[0]})\$(ip netns pids ${ns[1]}) ]]; do sleep 0.2; done" ||
    fail "processes of the cut job are still running: $(ip netns pids "${ns[0]}") $(ip netns pids "${ns[1]}")"
  # The link back; the same command with --resume finishes the job.
  ip -n "$br_ns" link set p1 up
  wait_reachable
  expect 0 ns_mpirun 2 "$limit" "$bin" "${run[@]}" --output o.h5 --progress none --resume
  grep -q 'resumed from .*: [1-3] of 4 chunks were already done' out.txt ||
    fail "the rerun did not resume from the partial output"
  grep 'resumed from' out.txt
  [[ -e o.h5 && ! -e .o.h5.partial ]] || fail "the resumed run did not commit o.h5"
  expect 0 "$py" - o.h5 ref.h5 <<'EOF'
import sys
import h5py, numpy as np
with h5py.File(sys.argv[1]) as f, h5py.File(sys.argv[2]) as g:
    a, b = f["o"][:], g["o"][:]
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    if a.tobytes() != b.tobytes():
        d = np.abs(a.astype(np.float64) - b)
        sys.exit("o differs from the uncut run: %d elements, max |diff| %g" % ((a != b).sum(), d.max()))
print("o %s %s: bit-identical to the uncut run" % (a.shape, a.dtype))
EOF
  cat out.txt
}

# The figures of docs/network.md (not a ctest case).
case_table() {
  need_tools
  need_tc
  local np n rate
  for np in ${NETNS_TABLE_P:-2 3}; do
    setup_net "$np"
    for rate in ${NETNS_TABLE_RATES:-none 10gbit 1gbit}; do
      bench "$np" $((4096 * np)) "$rate"
    done
    for n in ${NETNS_TABLE_TOKENS:-512 1024 2048 4096}; do
      bench "$np" $((n * np)) 1gbit --no-baseline
      bench "$np" $((n * np)) 1gbit --no-baseline --causal
    done
    teardown
  done
}

case_lossy_link() {
  need_tools
  need_tc
  need_nft
  need_h5py
  local lost
  setup_net 2
  shape 1gbit
  lose "${NETNS_LOSS_PERMILLE:-20}"
  expect 0 "$bin" gen --n 8192 --heads 4 --d 64 -o in.h5
  expect 0 ns_mpirun 2 60 "$bin" run --input in.h5 --output o.h5 --causal --lse --threads 1 \
    --progress none
  expect 0 "$bin" verify --input in.h5 --output o.h5 --rows 300
  bench 2 8192 1gbit --no-baseline --p2p-iters 5
  lost=$(dropped)
  ((lost > 0)) || fail "the 2% loss rules dropped no packet: the links were not lossy"
  echo "lossy link (1 Gbit/s, ${NETNS_LOSS_PERMILLE:-20} per mille lost): run verified, $lost packets dropped"
}

case_plan_check() {
  need_tools
  need_tc
  local np per n point link rate
  for np in ${NETNS_TABLE_P:-2 3}; do
    setup_net "$np"
    for point in ${NETNS_PLAN_POINTS:-1gbit:8192 100mbit:4096 1gbit:2048}; do
      link=${point%%:*} per=${point##*:}
      n=$((per * np))
      bench "$np" "$n" "$link" --no-baseline --p2p-iters 3
      # The kernel rate measured outside the namespaces' load, the link by
      # the plan's ranks across them.
      expect 0 "$bin" plan --n "$n" --d 64 --heads 4 --kv-heads-per-chunk 4 --ranks "$np" \
        --threads 1 --json
      rate=$(json out.txt 'j["machine"]["rate_gflops"]')
      expect 0 ns_mpirun "$np" 60 "$bin" plan --n "$n" --d 64 --heads 4 --kv-heads-per-chunk 4 \
        --ranks "$np" --ranks-per-node "$np" --cores-per-node "$(getconf _NPROCESSORS_ONLN)" \
        --threads 1 --rate "$rate" --measure-link --json
      "$py" - "bench_${np}_${n}_${link}.json" out.txt <<'EOF'
import json, sys
b, p = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))["rows"][0]
m = json.load(open(sys.argv[2]))["machine"]
print("P %d  N %6d  link %.3f Gbit/s (bench), %.3f (plan)  measured %.3f s  predicted %.3f s"
      "  predicted/measured %.2f  (predicted: rate %.1f GFLOP/s, hop %.4f s, step compute %.4f s,"
      " exposed %.4f s)" % (
          b["ranks"], b["n"], b["p2p"]["algbw_GBps"] * 8, m["bandwidth_gbps"], b["seconds"],
          p["predicted_s"], p["predicted_s"] / b["seconds"], m["rate_gflops"], p["hop_s"],
          p["step_compute_s"], p["exposed_s"]))
EOF
    done
    teardown
  done
}

"case_$case_name"
echo "ok [$case_name]"
