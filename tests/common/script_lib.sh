# Helpers the bash test scripts share (sourced, not run). The caller sets
# case_name and works in its own scratch directory.

# fail MSG: reports the failed check with the last command's output; exit 1.
fail() {
  echo "FAIL [$case_name]: $*"
  for f in out.txt err.txt; do
    [[ -s $f ]] && { echo "--- $f"; cat "$f"; }
  done
  exit 1
}

# expect RC CMD...: runs CMD (stdout -> out.txt, stderr -> err.txt) and
# checks its exit status (RC "nonzero": anything but 0).
expect() {
  local want=$1 rc=0
  shift
  "$@" >out.txt 2>err.txt || rc=$?
  if [[ $want == nonzero ]]; then
    [[ $rc -ne 0 ]] || fail "'$*' exited 0, expected a failure"
  else
    [[ $rc -eq $want ]] || fail "'$*' exited $rc, expected $want"
  fi
}

# one_error_line NEEDLE: exactly one error line on stderr (err.txt), and it
# mentions NEEDLE. An error line is one of ringattn's own ("ringattn: ...");
# a script whose tools print other lines sets ONE_ERROR_PATTERN (a grep
# pattern; '' counts every line). Warnings of ours never count.
one_error_line() {
  local pattern=${ONE_ERROR_PATTERN-'^ringattn: '} n
  # A warning ("ringattn: warning: ...", e.g. threads x ranks beyond the
  # cores) is not an error line.
  n=$(grep -v -- '^ringattn: warning: ' err.txt | grep -c -- "$pattern" || true)
  [[ $n -eq 1 ]] || fail "expected one error line on stderr, got $n"
  grep -q -- "$1" err.txt || fail "stderr does not mention '$1'"
}
