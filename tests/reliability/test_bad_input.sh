#!/usr/bin/env bash
# Every way the input, the output target, the configuration or the launch can
# be wrong, run through the real `ringattn run` under mpirun (issue 7), and
# the files `info` and `verify` open (they share run's checks and verdicts):
#
#   test_bad_input.sh RINGATTN SCRATCH_DIR GROUP
#
# GROUP is one of: files, shapes, types, values, sizes, output, paths,
# subcommands, config, launch (the functions case_<GROUP> below). Every run
# is bounded (timeout 60: a FIFO opened by mistake would block it). For each
# bad case, at 1 and 2
# ranks, and at 3 (oversubscribed) where the rank count could change the
# outcome (which rank sees the problem, tokens per rank, Slurm's count), the
# script checks that
#   - the exit code is the class's: 2 usage/config, 3 input data, 4 I/O;
#   - stderr has exactly one 'ringattn:' line (rank 0's; every rank reached
#     the same verdict, or the others would print or hang), and it holds the
#     expected words (file, dataset or key, and the problem);
#   - the existing output (out/out.h5, run with --overwrite so a run would
#     replace it) is byte for byte and mtime the same, and neither the output
#     nor the input directory gained a file (no hidden temporary '.out.h5...').
# The broken inputs come from make_bad_inputs.py (h5py, in the system Python).
# Environment: MPIEXEC (default mpirun), MPIEXEC_NUMPROC_FLAG (default -n),
# MPIEXEC_FLAGS (default --oversubscribe), H5PY_PYTHON (default
# /usr/bin/python3). Exit 0 on success, 1 on a failed check, 77 when h5py is
# missing.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../common/script_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common/script_lib.sh"

case_args "$@"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mpi_settings
py=${H5PY_PYTHON:-/usr/bin/python3}
# Every case here ends with all ranks exiting non-zero, after rank 0 printed
# (MPI_Finalize comes after the message); Open MPI's mpirun then waits 1 s
# per rank before SIGKILL, which would be 2/3 of this test's time.
export OMPI_MCA_odls_base_sigkill_timeout=${OMPI_MCA_odls_base_sigkill_timeout:-0}
# Files in tests/fuzz/regressions loop HDF5 (or allocate until stopped):
# their description then ends at this deadline (s) instead of 300 s, the
# same verdict, exit 3. Each such call waits it out (9 of them in the files
# and subcommands groups); describing any other file here takes milliseconds.
export RINGATTN_TEST_DESCRIBE_DEADLINE=2

need_h5py

enter_case_dir
mkdir out
"$py" "$here/make_bad_inputs.py" in >/dev/null || fail "make_bad_inputs.py failed"
echo "an earlier result, not to be touched" >out/out.h5
touch -d '2001-02-03 04:05:06' out/out.h5

# mpi NP CMD...: CMD on NP ranks, for at most 60 s (script_lib's mpi,
# bounded).
mpi() {
  local np=$1
  shift
  timeout 60 "$mpiexec" "$np_flag" "$np" "${mpi_flags[@]}" "$@"
}

# What must not change: the earlier output and the two directories' listings.
state() {
  md5sum out/out.h5
  stat -c '%y' out/out.h5
  ls -A out in
}

# refused NP RC "NEEDLE..." ARGS...: `ringattn $sub ARGS` (sub: run unless
# set) on NP ranks exits RC within 60 s with one 'ringattn:' line holding
# every needle (the needles are one argument, separated by '|'), no
# backtrace, no line quoting our source code, and changes nothing on disk.
sub=run
refused() {
  local np=$1 rc=$2 needles=$3 before n needle
  shift 3
  before=$(state)
  expect "$rc" mpi "$np" "${prefix[@]}" "$bin" "$sub" "$@"
  n=$(grep -c '^ringattn: ' err.txt || true)
  [[ $n -eq 1 ]] || fail "[np $np] expected one 'ringattn:' line on stderr, got $n: $sub $*"
  IFS='|' read -r -a needle <<<"$needles"
  for w in "${needle[@]}"; do
    grep '^ringattn: ' err.txt | grep -qF -- "$w" || fail "[np $np] stderr lacks '$w': $sub $*"
  done
  ! grep -qE '^\[|Signal:|backtrace|buffer overflow' err.txt || fail "[np $np] a crash report: $sub $*"
  ! grep -qE '\.(get|c_str|data)\(|RA_[A-Z0-9_]*CHECK|H5[A-Z][a-z_]+\([a-z]' err.txt ||
    fail "[np $np] the line quotes source code: $sub $*"
  [[ $(state) == "$before" ]] || fail "[np $np] files changed: $(ls -A out in)"
  echo "  np $np rc $rc: $(grep '^ringattn: ' err.txt | sed 's/ \[[^]]*\]$//')"
}

# An input case on each rank count in nps (default 1 and 2), replacing out.h5
# were the run to succeed.
bad_input() {
  local rc=$1 needles=$2 input=$3 np
  shift 3
  for np in "${nps[@]}"; do
    refused "$np" "$rc" "$needles" --input "in/$input" --output out/out.h5 --overwrite \
      --threads 1 "$@"
  done
}
nps=(1 2)
prefix=()  # a command the ranks run ringattn under (env VAR=...)

# bad_config NP FILE NEEDLE: a run with --config FILE on NP ranks is refused
# (exit 2), its line naming FILE followed by NEEDLE.
bad_config() {
  refused "$1" 2 "$2$3" --config "$2" --input in/good.h5 --output out/out.h5 --overwrite
}

case_files() {
  nps=(1 2 3)
  bad_input 4 "input file 'in/missing.h5'|no such file" missing.h5
  bad_input 3 "input file 'in/trunc_b.h5'|truncated or corrupt" trunc_b.h5
  nps=(1 2)
  bad_input 3 "input file 'in/text.h5'|not an HDF5 file" text.h5
  local t
  for t in a c d; do
    bad_input 3 "input file 'in/trunc_$t.h5'|truncated or corrupt" "trunc_$t.h5"
  done
  bad_input 3 "input file 'in/no_v.h5', dataset 'v'|no such dataset|k, q" no_v.h5
  bad_input 3 "in/no_v.h5', dataset 'values'|no such dataset" no_v.h5 --v-name values
  bad_input 3 "input file 'in/rank3.h5', dataset 'q'|3 dimensions [2, 64, 16]|expected 4" rank3.h5
  # A link that points nowhere is a missing dataset (3), not a failed call (4).
  bad_input 3 "in/dangling.h5', dataset 'v'|no such dataset|'/nowhere'|resolves to nothing" \
    dangling.h5
  bad_input 3 "in/dangling_ext.h5', dataset 'v'|no such dataset|absent.h5" dangling_ext.h5
  # Not regular files: refused by kind, never opened (a FIFO would block the
  # open; /dev/zero would be read for ever).
  mkfifo in/fifo.h5
  bad_input 4 "input file 'in/fifo.h5'|is a FIFO (named pipe), not a regular file" fifo.h5
  rm -f in/fifo.h5
  refused 1 4 "input file '/dev/zero'|is a character device" --input /dev/zero \
    --output out/out.h5 --overwrite --threads 1
  refused 2 4 "input file '/dev/stdin'|not a regular file" --input /dev/stdin \
    --output out/out.h5 --overwrite --threads 1 </dev/null
  # Locked by a writer: h5py holds it open for writing (HDF5 file locking).
  cp in/good.h5 in/locked.h5
  "$py" -c 'import h5py, sys, time; f = h5py.File(sys.argv[1], "r+"); print("open", flush=True); time.sleep(60)' \
    in/locked.h5 >writer.txt &
  local writer=$!
  for _ in $(seq 100); do [[ -s writer.txt ]] && break; sleep 0.1; done
  bad_input 4 "input file 'in/locked.h5'|locked by another process that has it open for writing" \
    locked.h5
  kill "$writer"
  wait "$writer" 2>/dev/null || true
  rm -f in/locked.h5 writer.txt
  # Files the fuzzer found that crash HDF5 1.10 itself (tests/fuzz/regressions,
  # KNOWN_HDF5_ISSUES.md): rank 0 validates in a child process, so each is one
  # input error, not a dead rank with a backtrace.
  local f i=0
  for f in "$here"/../fuzz/regressions/*; do
    i=$((i + 1))
    cp "$f" "in/fuzz_$i.h5"
    bad_input 3 "input file 'in/fuzz_$i.h5'" "fuzz_$i.h5"
    grep -q '^\[' err.txt && fail "a backtrace reached stderr for $(basename "$f")"
    rm -f "in/fuzz_$i.h5"
  done
}

case_shapes() {
  bad_input 3 "input file 'in/batch.h5'|disagree in batch size B|'q' [2, 2, 64, 16]" batch.h5
  bad_input 3 "input file 'in/headdim.h5'|disagree in head dim D|'q' [1, 2, 64, 8]" headdim.h5
  bad_input 3 "input file 'in/kv_tokens.h5'|'k' and 'v' must agree|'v' [1, 2, 72, 16]" kv_tokens.h5
  bad_input 3 "input file 'in/gqa.h5'|3 heads, not a multiple of the 2 heads|H_q % H_kv" gqa.h5
  bad_input 3 "input file 'in/zero.h5', dataset 'q'|length 0 along N (tokens)" zero.h5
  bad_input 3 "input file 'in/d300.h5', dataset 'q'|head dim D = 300|at most 256" d300.h5
}

case_types() {
  bad_input 3 "input file 'in/int.h5', dataset 'q'|integer elements|float32 or float16" int.h5
  bad_input 3 "input file 'in/string.h5', dataset 'k'|string elements" string.h5
  bad_input 3 "input file 'in/compound.h5', dataset 'v'|compound elements" compound.h5
  bad_input 3 "input file 'in/float64.h5', dataset 'q'|float64" float64.h5
  bad_input 3 "input file 'in/filter.h5', dataset 'k'|filter 'lzf'|cannot decode" filter.h5
  # szip with chunks szip left unfiltered: read right (independently), the
  # same result as the uncompressed good.h5; and `info` calls it usable.
  if [[ -f in/szip.h5 ]]; then
    local np
    for np in 2 3; do
      expect 0 mpi "$np" "$bin" run --input in/szip.h5 --output out/szip.h5 --threads 1
      expect 0 mpi "$np" "$bin" run --input in/good.h5 --output out/plain.h5 --threads 1
      "$py" -c 'import h5py, sys, numpy as np
a, b = (h5py.File(p)["o"][...] for p in sys.argv[1:])
sys.exit(0 if np.array_equal(a, b) else 1)' out/szip.h5 out/plain.h5 ||
        fail "[np $np] the szip input gave another result than the same values uncompressed"
      rm -f out/szip.h5 out/plain.h5
      echo "  np $np rc 0: szip input read right"
    done
    expect 0 timeout 60 "$bin" info in/szip.h5
    grep -q '^input: OK' out.txt || fail "info does not call the szip input usable"
  else
    echo "  (szip skipped: this HDF5 has no szip encoder)"
  fi
}

# Needs the job to call check_finite_shard after each read (src/io/nonfinite.hpp).
case_values() {
  nps=(1 2 3)
  bad_input 3 "input file 'in/nan_q.h5', dataset 'q'|has NaN at [0, 1, 37, 5]|--allow-nonfinite" \
    nan_q.h5
  # -Inf at token 50 (rank 1 of 2, rank 2 of 3) comes before a NaN at [0, 1, 60, 0].
  bad_input 3 "input file 'in/inf_k.h5', dataset 'k'|has -Inf at [0, 0, 50, 3]" inf_k.h5
  nps=(3)
  bad_input 3 "dataset 'q'|has NaN at [0, 1, 37, 5]" nan_q.h5 --partition striped
  nps=(1 2)
  bad_input 3 "input file 'in/inf_v16.h5', dataset 'v'|has +Inf at [0, 1, 3, 15]" inf_v16.h5
  # Accepted when asked for: the run completes (and writes its own output).
  expect 0 mpi 2 "$bin" run --input in/nan_q.h5 --output out/nan.h5 --threads 1 --allow-nonfinite
  rm -f out/nan.h5
}

# Needs the job to call preflight() before it allocates (src/job/preflight.hpp),
# except bytes_overflow.h5, which input validation refuses.
case_sizes() {
  bad_input 3 "input file 'in/huge.h5'|per rank on|over the budget|more ranks" huge.h5
  bad_input 3 "input file 'in/overflow.h5'|overflows a 64-bit byte count" overflow.h5
  bad_input 3 "input file 'in/bytes_overflow.h5', dataset 'q'|byte count overflows" \
    bytes_overflow.h5
  bad_input 3 "input file 'in/good.h5'|over the budget of|memory_limit_mb = 0.01" good.h5 \
    --memory-limit-mb 0.01
  refused 3 3 "input file 'in/short.h5', dataset 'q'|has 2 tokens, fewer than the 3 ranks" \
    --input in/short.h5 --output out/out.h5 --overwrite --threads 1
}

case_output() {
  local np
  for np in 1 2; do
    refused "$np" 4 "output file 'out/none/o.h5'|directory 'out/none' does not exist" \
      --input in/good.h5 --output out/none/o.h5 --threads 1
    refused "$np" 2 "output file 'in/good.h5'|is the input file" \
      --input in/good.h5 --output in/good.h5 --overwrite --threads 1
    refused "$np" 2 "output file 'in/../in/good.h5'|is the input file" \
      --input in/good.h5 --output in/../in/good.h5 --overwrite --threads 1
    refused "$np" 2 "output file 'out/out.h5'|exists|--overwrite" \
      --input in/good.h5 --output out/out.h5 --threads 1
    refused "$np" 2 "output file 'out'|is a directory" \
      --input in/good.h5 --output out --overwrite --threads 1
  done
  mkdir -p ro
  chmod 555 ro
  if [[ $(id -u) -ne 0 ]]; then
    for np in 1 2; do
      refused "$np" 4 "output file 'ro/o.h5'|directory 'ro' is not writable" \
        --input in/good.h5 --output ro/o.h5 --threads 1
    done
  elif command -v setpriv >/dev/null && id nobody >/dev/null 2>&1; then
    # root writes anywhere: drop to nobody (one rank: Open MPI's launcher
    # cannot start ranks as another user).
    chmod -R o+rX "$dir" && chmod o+x "$scratch"
    # Open MPI's session files in a folder of nobody's own, apart from the
    # root runs beside it (one CI run saw MPI_File_open fail here once).
    local tmp_nobody=$dir/tmp-nobody
    mkdir -p "$tmp_nobody" && chown nobody:nogroup "$tmp_nobody"
    local rc=0
    TMPDIR=$tmp_nobody OMPI_MCA_orte_tmpdir_base=$tmp_nobody \
      setpriv --reuid=nobody --regid=nogroup --clear-groups "$bin" run --input in/good.h5 \
      --output ro/o.h5 --threads 1 >out.txt 2>err.txt || rc=$?
    [[ $rc -eq 4 ]] || fail "not-writable directory: exit $rc, expected 4"
    grep -q "^ringattn: io error: output file 'ro/o.h5': directory 'ro' is not writable" err.txt ||
      fail "not-writable directory: wrong message"
    echo "  np 1 rc 4 (as nobody): $(sed 's/ \[[^]]*\]$//' err.txt)"
  else
    echo "  (not-writable directory skipped: root, and no setpriv or user nobody)"
  fi
  [[ -z $(ls -A ro) ]] || fail "a file was left in the read-only directory"
}

# Names up to the filesystem's 255 bytes: inputs and outputs at and around
# the lengths that crashed Open MPI's MPI-IO layer (a 256-byte buffer), and
# one byte beyond the limit; targets that are not regular files or are
# dangling symbolic links, found before any work.
case_paths() {
  local np len name
  for len in 243 246 255; do
    name=$(printf 'i%.0s' $(seq 4 "$len")).h5
    cp in/good.h5 "in/$name"
    for np in 2 3; do
      expect 0 mpi "$np" "$bin" run --input "in/$name" --output out/long.h5 --threads 1
      [[ $(grep -c '^ringattn: ' err.txt || true) -eq 0 ]] || fail "[np $np] input name $len: $(cat err.txt)"
      rm -f out/long.h5
      echo "  np $np rc 0: input name of $len bytes"
    done
    rm -f "in/$name"
  done
  for len in 230 246 255; do
    name=$(printf 'o%.0s' $(seq 4 "$len")).h5
    for np in 2 3; do
      expect 0 mpi "$np" "$bin" run --input in/good.h5 --output "out/$name" --threads 1
      [[ -f "out/$name" && $(ls -A out | wc -l) -eq 2 ]] || fail "[np $np] output name $len: $(ls -A out)"
      rm -f "out/$name"
      echo "  np $np rc 0: output name of $len bytes"
    done
  done
  name=$(printf 'o%.0s' $(seq 4 256)).h5
  for np in 1 2; do
    refused "$np" 2 "its name is 256 bytes, longer than the 255" --input in/good.h5 \
      --output "out/$name" --threads 1
  done
  ln -s nowhere/o.h5 out/dangling.h5
  mkfifo out/fifo.h5
  for np in 1 2; do
    refused "$np" 2 "output file 'out/dangling.h5'|symbolic link to 'nowhere/o.h5'|does not exist" \
      --input in/good.h5 --output out/dangling.h5 --threads 1
    refused "$np" 2 "output file 'out/fifo.h5'|FIFO (named pipe), not a regular file" \
      --input in/good.h5 --output out/fifo.h5 --overwrite --threads 1
    refused "$np" 2 "output file '/dev/null'|character device, not a regular file" \
      --input in/good.h5 --output /dev/null --overwrite --threads 1
  done
  rm -f out/dangling.h5 out/fifo.h5
}

# `info` and `verify` open files the way `run` does: in a child process
# first, with the same checks and classes (3 damaged or unusable, 4 missing,
# not a regular file or unreadable), never a crash of their own.
case_subcommands() {
  local f i=0 np
  expect 0 mpi 2 "$bin" run --input in/good.h5 --output out/good_out.h5 --threads 1
  for f in "$here"/../fuzz/regressions/*; do
    i=$((i + 1))
    cp "$f" "in/fuzz_$i.h5"
    sub=info
    refused 1 3 "file 'in/fuzz_$i.h5'" "in/fuzz_$i.h5"
    sub=verify
    refused 2 3 "output file 'in/fuzz_$i.h5'" --input in/good.h5 --output "in/fuzz_$i.h5"
    refused 1 3 "input file 'in/fuzz_$i.h5'" --input "in/fuzz_$i.h5" --output out/good_out.h5
    rm -f "in/fuzz_$i.h5"
  done
  mkfifo in/fifo.h5
  for np in 1 2; do
    sub=info
    refused "$np" 4 "file 'in/fifo.h5'|FIFO" in/fifo.h5
    refused "$np" 4 "file '/dev/zero'|character device" /dev/zero
    refused "$np" 4 "file 'in/missing.h5'|no such file" in/missing.h5
    sub=verify
    refused "$np" 4 "output file 'in/fifo.h5'|FIFO" --input in/good.h5 --output in/fifo.h5
    refused "$np" 4 "input file 'in/fifo.h5'|FIFO" --input in/fifo.h5 --output out/good_out.h5
  done
  rm -f in/fifo.h5 out/good_out.h5
  sub=run
  # A describable file with an unusable input: info reports run's verdict.
  expect 0 timeout 60 "$bin" info in/dangling.h5
  grep -q "^input: NOT USABLE: input error: .*dataset 'v': no such dataset" out.txt ||
    fail "info lacks run's verdict on in/dangling.h5"
  echo "  info in/dangling.h5: $(grep '^input:' out.txt | sed 's/ \[[^]]*\]$//')"
}

case_config() {
  printf '[run]\nthread = 2\n' >typo.toml
  printf '[attention]\ncausal = "yes"\n' >type.toml
  printf '[run]\nkv_heads_per_chunk = 0\n' >range.toml
  printf '[ring]\ncomm_timeout = -1\n' >range2.toml
  printf '[outputs]\npath = "x.h5"\n' >section.toml
  printf '[run\nthreads = 1\n' >syntax.toml
  local np
  for np in 1 2; do
    bad_config "$np" typo.toml ": unknown key 'run.thread'"
    bad_config "$np" type.toml ": attention.causal must be true or false"
    bad_config "$np" range.toml ": run.kv_heads_per_chunk must be >= 1"
    bad_config "$np" range2.toml ": ring.comm_timeout must be >= 0"
    bad_config "$np" section.toml ": unknown key 'outputs'"
    bad_config "$np" syntax.toml ":1:"
  done
  # Flags go through the same checks as the file (the settings table): one
  # 'ringattn:' line from rank 0, the flag named, the number printed short.
  for np in 1 2; do
    refused "$np" 2 "--threads must be >= 0 and <= 4096|got 5000" \
      --input in/good.h5 --output out/out.h5 --overwrite --threads 5000
    refused "$np" 2 "--memory-limit-mb must be >= 0 MiB|got -1" \
      --input in/good.h5 --output out/out.h5 --overwrite --memory-limit-mb -1
    if grep -q 179769 err.txt; then fail "[np $np] a range error printed the double maximum"; fi
  done
  # NaN or Inf wherever a finite number is meant, from a flag and from the
  # file alike; --scale beyond a normal float32; --comm-timeout beyond 1e9 s.
  local flag key section bad
  for flag in scale:attention memory-limit-mb:run checkpoint-interval:run \
    progress-interval:run comm-timeout:ring; do
    section=${flag#*:} flag=${flag%:*} key=${flag//-/_}
    for bad in nan inf; do
      printf '[%s]\n%s = %s\n' "$section" "$key" "$bad" >nonfinite.toml
      for np in 1 2; do
        refused "$np" 2 "--$flag must be a finite number, got $bad" \
          --input in/good.h5 --output out/out.h5 --overwrite --"$flag" "$bad"
        refused "$np" 2 "nonfinite.toml: $section.$key must be a finite number, got $bad" \
          --config nonfinite.toml --input in/good.h5 --output out/out.h5 --overwrite
      done
    done
  done
  for bad in 1e39:1e+39 1e-39:1e-39 -1:-1; do  # given:printed
    refused 2 2 "--scale must be 0 (1/sqrt(D)) or >= 1.17549e-38 and <= 3.40282e+38|got ${bad#*:}" \
      --input in/good.h5 --output out/out.h5 --overwrite --scale "${bad%:*}"
  done
  refused 2 2 "--comm-timeout must be >= 0 and <= 1e+09 seconds|got 9.3e+09" \
    --input in/good.h5 --output out/out.h5 --overwrite --comm-timeout 9.3e9
  refused 2 2 "--backend must be \"cpu\" or \"cuda\", got \"gpu\"" \
    --input in/good.h5 --output out/out.h5 --overwrite --backend gpu
}

# Needs the job to call preflight() (or check_slurm_world) (src/job/preflight.hpp).
case_launch() {
  local np
  # Set in the ranks' environment only: in mpirun's own, Open MPI would take
  # the Slurm variables as an allocation to launch into.
  prefix=(env SLURM_JOB_ID=99 SLURM_NTASKS=4)
  for np in 1 2 3; do
    refused "$np" 2 "world size $np differs from SLURM_NTASKS=4|srun|mpirun -np 4" \
      --input in/good.h5 --output out/out.h5 --overwrite --threads 1
  done
  prefix=()
}

"case_$case_name"
echo "ok [$case_name]"
