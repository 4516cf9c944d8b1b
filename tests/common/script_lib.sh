# shellcheck shell=bash
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

# The case scripts' common start ("SCRIPT RINGATTN SCRATCH_DIR CASE").
# case_args "$@": sets bin (RINGATTN, made absolute), scratch and case_name.
case_args() {
  bin=$(realpath "$1")
  scratch=$2
  case_name=$3
}

# enter_case_dir: the case's directory, $scratch/$case_name (dir), emptied
# and made the working directory.
enter_case_dir() {
  dir=$scratch/$case_name
  rm -rf "$dir"
  mkdir -p "$dir"
  cd "$dir" || exit 1
}

# skip REASON: the case is skipped (exit 77, ctest's SKIP_RETURN_CODE).
skip() {
  echo "skipped [$case_name]: $*"
  exit 77
}

# need_h5py: skip unless $py (the caller sets it) imports h5py and numpy.
# shellcheck disable=SC2154
need_h5py() {
  "$py" -c 'import h5py, numpy' 2>/dev/null ||
    skip "$py cannot import h5py and numpy (apt-get install python3-h5py python3-numpy)"
}

# mpi_settings: the launcher from the environment, as CMake passes it:
# mpiexec (MPIEXEC, default mpirun), np_flag (MPIEXEC_NUMPROC_FLAG, default
# -n) and the array mpi_flags (MPIEXEC_FLAGS' words, default
# --oversubscribe).
mpi_settings() {
  mpiexec=${MPIEXEC:-mpirun}
  np_flag=${MPIEXEC_NUMPROC_FLAG:--n}
  read -r -a mpi_flags <<<"${MPIEXEC_FLAGS:---oversubscribe}"
}

# mpi NP CMD...: CMD on NP ranks (after mpi_settings).
mpi() {
  local np=$1
  shift
  "$mpiexec" "$np_flag" "$np" "${mpi_flags[@]}" "$@"
}

# ringattn_run NP ARGS...: `ringattn run ARGS` on NP ranks, one thread each
# and progress lines every 1000 s (none, in a short run).
ringattn_run() {
  local np=$1
  shift
  mpi "$np" "$bin" run --threads 1 --progress-interval 1000 "$@"
}
