#!/usr/bin/env bash
# Runs fuzz_input_validation once on each input file and gives one verdict.
#   replay.sh FUZZER PATH...     (PATH: a file, or a folder of files)
# An input passes when the harness returns (a clean verdict on the file); a
# crash, sanitizer report, hang or finding fails it. Inputs that fail inside
# HDF5 itself and that we cannot fix in our code are listed in
# KNOWN_HDF5_ISSUES.md (a "### `name`" heading, and a "signature:" line that
# their stack matches), and so is any failure whose crash site is in libhdf5
# (report_site.sh); they are left out of the verdict and printed as such.
# With UNKNOWN_LIST=FILE, the paths of inputs that failed otherwise are
# written there (launch/run_fuzz.sh keeps them as regressions).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fuzzer=$1
shift
known_md=$here/KNOWN_HDF5_ISSUES.md
: "${UNKNOWN_LIST:=/dev/null}"
: >"$UNKNOWN_LIST"
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$here/../sanitizers/lsan.supp}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
fuzz_flags=(-timeout=10 -rss_limit_mb=2048)

known_names=() known_sigs=()
if [[ -f $known_md ]]; then
  mapfile -t known_names < <(sed -n 's/^### `\([^`]*\)`.*/\1/p' "$known_md")
  mapfile -t known_sigs < <(sed -n 's/^signature: `\([^`]*\)`.*/\1/p' "$known_md")
fi
is_known_name() {
  local n
  for n in "${known_names[@]}"; do [[ $1 == "$n" ]] && return 0; done
  return 1
}
# Crash sites and known signatures (report_site.sh). Any failure whose crash
# site is inside HDF5 is left out: HDF5 1.10 has more of these than any list
# can hold (each fuzzing run finds new ones); our code only hands it a path
# and handles, and real runs validate in a child process that turns such a
# crash into an input error.
# shellcheck source=report_site.sh
source "$here/report_site.sh"

files=()
for p in "$@"; do
  if [[ -d $p ]]; then
    while IFS= read -r f; do files+=("$f"); done < <(find "$p" -maxdepth 1 -type f ! -name '.*' ! -name '*.md' | sort)
  elif [[ -f $p ]]; then
    files+=("$p")
  fi
done
echo "replay: ${#files[@]} inputs"
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Fast path: everything not known to fail, in one process (MPI starts once).
batch=()
for f in "${files[@]}"; do is_known_name "$(basename "$f")" || batch+=("$f"); done
if ((${#batch[@]})) && timeout 300 "$fuzzer" "${fuzz_flags[@]}" "${batch[@]}" >"$log" 2>&1; then
  suspects=()
else
  suspects=("${files[@]}")
fi
for f in "${files[@]}"; do is_known_name "$(basename "$f")" && suspects+=("$f"); done

failed=0
declare -A seen=()
for f in "${suspects[@]}"; do
  [[ -n ${seen[$f]:-} ]] && continue
  seen[$f]=1
  name=$(basename "$f")
  if timeout 60 "$fuzzer" "${fuzz_flags[@]}" "$f" >"$log" 2>&1; then
    is_known_name "$name" && echo "replay: NOTE: known HDF5 issue '$name' no longer fails; remove it from $known_md"
    continue
  fi
  # An RSS-limit report's stack is libFuzzer's watchdog thread, which says
  # nothing: run it again with a malloc limit, whose report names the site of
  # the largest allocation.
  if grep -q 'out-of-memory (used:' "$log"; then
    timeout 60 "$fuzzer" "${fuzz_flags[@]}" -malloc_limit_mb=256 "$f" >"$log" 2>&1
  fi
  if is_known_name "$name"; then
    echo "replay: known HDF5 issue '$name' (KNOWN_HDF5_ISSUES.md): fails as listed, not counted"
  elif sig=$(report_matches_signature "$log" "${known_sigs[@]}"); then
    echo "replay: '$f' fails with the stack of a known HDF5 issue (signature '$sig'), not counted"
  elif fn=$(report_site_in_hdf5 "$log"); then
    echo "replay: '$f' fails inside HDF5 (first frame $fn in libhdf5), not counted"
  else
    echo "replay: FAIL '$f':"
    grep -E 'ERROR|FINDING|SUMMARY|runtime error|^ +#[0-9] ' "$log" | head -20 | sed 's/^/    /'
    echo "  reproduce: $fuzzer $f"
    echo "$f" >>"$UNKNOWN_LIST"
    failed=$((failed + 1))
  fi
done
if ((failed)); then
  echo "replay: $failed of ${#files[@]} inputs failed"
  exit 1
fi
echo "replay: all ${#files[@]} inputs ended in a verdict (known HDF5 issues aside)"
