#!/usr/bin/env bash
# synthetic.sh: a sweep of seeded synthetic inputs with `ringattn gen`, one
# file per token count N, for scaling studies.
#
#   datasets/synthetic.sh --n 1024,4096,16384 --dir DIR [--prefix NAME]
#                         [--dry-run] [GEN FLAGS...]
#
# Writes DIR/NAME_n<N>.h5 for each N in the list (comma- or space-separated;
# NAME defaults to "synthetic"), running
#   ringattn gen --output DIR/NAME_n<N>.h5 --n N GEN FLAGS...
# Every other flag (--heads, --kv-heads, --d, --dtype, --seed, --batch,
# --chunked, --gzip, --overwrite, ...) goes to `ringattn gen` unchanged, so
# the files differ only in N (values follow `ringattn gen`'s seed rule; see
# `ringattn gen --help`). --n-kv is rejected: each file gets N_kv = N.
# The output format is `ringattn gen`'s: q [B, H, N, D], k and v
# [B, H_kv, N, D].
#
# The binary: $RINGATTN if set, else build/ringattn under the repository
# root, else `ringattn` on PATH. --dry-run prints the commands only.
# Exit status: 0 ok, 2 usage, else the first failing gen's status (the
# sweep stops there; files already written stay).
set -euo pipefail

prog=synthetic.sh
die() {
  echo "$prog: error: $2" >&2
  exit "$1"
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

ns=""
dir=""
prefix=synthetic
dry=0
gen_flags=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --n) (($# >= 2)) || die 2 "--n needs a list of token counts"; ns=$2; shift 2 ;;
    --n=*) ns=${1#--n=}; shift ;;
    --dir) (($# >= 2)) || die 2 "--dir needs a directory"; dir=$2; shift 2 ;;
    --dir=*) dir=${1#--dir=}; shift ;;
    --prefix) (($# >= 2)) || die 2 "--prefix needs a name"; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --dry-run) dry=1; shift ;;
    --output | --output=* | -o) die 2 "$1: the sweep names its files (use --dir and --prefix)" ;;
    --n-kv | --n-kv=*) die 2 "$1: not supported in a sweep (each file has N_kv = N)" ;;
    *) gen_flags+=("$1"); shift ;;
  esac
done
[[ -n $ns ]] || die 2 "--n LIST is required (e.g. --n 1024,4096) (see --help)"
[[ -n $dir ]] || die 2 "--dir DIR is required (see --help)"
[[ $prefix =~ ^[A-Za-z0-9._-]+$ ]] || die 2 "--prefix '$prefix': use letters, digits, '.', '_', '-'"

read -r -a list <<<"${ns//,/ }"
((${#list[@]})) || die 2 "--n '$ns': an empty list"
for n in "${list[@]}"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die 2 "--n: '$n' is not a positive integer"
done

if [[ -n ${RINGATTN:-} ]]; then
  bin=$RINGATTN
  [[ -x $bin ]] || die 4 "RINGATTN=$bin is not an executable file"
else
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  if [[ -x $root/build/ringattn ]]; then
    bin=$root/build/ringattn
  elif command -v ringattn >/dev/null; then
    bin=$(command -v ringattn)
  else
    die 4 "no ringattn binary: set RINGATTN, or build $root/build/ringattn (launch/build.sh)"
  fi
fi

if ((dry)); then
  for n in "${list[@]}"; do
    printf '%q ' "$bin" gen --output "$dir/${prefix}_n$n.h5" --n "$n" "${gen_flags[@]}"
    echo
  done
  exit 0
fi

if [[ ! -d $dir ]]; then
  mkdir -p "$dir" || die 4 "cannot create directory $dir"
fi
for n in "${list[@]}"; do
  rc=0
  "$bin" gen --output "$dir/${prefix}_n$n.h5" --n "$n" "${gen_flags[@]}" || rc=$?
  ((rc == 0)) || die "$rc" "ringattn gen failed for N = $n (exit $rc); stopping the sweep"
done
echo "$prog: wrote ${#list[@]} file(s) in $dir"
