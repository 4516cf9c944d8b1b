#!/usr/bin/env bash
# End-to-end checks of the ringattn command, one case per call:
#
#   test_cli.sh RINGATTN SCRATCH_DIR CASE
#
# CASE is one of: help, gen_info, gen_refuses, run_verify, info_not_hdf5,
# run_errors, settings_flags, settings_agreed, window, progress,
# bench_kernel_variants,
# bench_kernel_refusal, bench_backward, backward_verify (see the functions
# below). The case runs in SCRATCH_DIR/CASE, emptied first.
# Environment: MPIEXEC (default mpirun), MPIEXEC_NUMPROC_FLAG (default -n),
# MPIEXEC_FLAGS (default --oversubscribe), H5PY_PYTHON (default
# /usr/bin/python3: Debian's h5py lives in the system Python). Exit 0 on
# success, 1 on a failed check, 77 when a case needs h5py and it is missing
# (or, bench_kernel_refusal, when this CPU runs every vector path).
set -euo pipefail
# shellcheck source=SCRIPTDIR/../common/script_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common/script_lib.sh"

case_args "$@"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
mpi_settings
py=${H5PY_PYTHON:-/usr/bin/python3}

enter_case_dir

case_help() {
  expect 0 "$bin" --help
  for sub in gen info verify run; do grep -q "$sub" out.txt || fail "--help does not list $sub"; done
  expect 0 "$bin" --version
  grep -q '^ringattn [0-9]' out.txt || fail "--version does not print the version"
  for sub in gen info verify; do expect 0 "$bin" "$sub" --help; done
  # The list: one line per subcommand, in the order of the work.
  expect 0 "$bin" --help
  [[ $(sed -n '/^Subcommands:/,$p' out.txt | awk 'length > 100' | wc -l) -eq 0 ]] ||
    fail "a subcommand's summary is longer than a line"
  [[ $(sed -n 's/^  \([a-z]*\)  .*/\1/p' out.txt | tr '\n' ' ') == "run verify weights info gen serve submit query bench plan selfcheck help " ]] ||
    fail "subcommands out of order: $(sed -n 's/^  \([a-z]*\)  .*/\1/p' out.txt | tr '\n' ' ')"
  expect 0 "$bin" -V
  grep -q '^ringattn [0-9]' out.txt || fail "-V does not print the version"
  for sub in run verify info gen serve submit query plan selfcheck "bench kernel" "bench ring"; do
    # shellcheck disable=SC2086  # "bench ring" is two words
    expect 0 "$bin" help $sub
    grep -q "^Usage: ringattn $sub " out.txt || fail "help $sub: no usage line for it"
    grep -q '^Example:' out.txt || fail "help $sub: no example"
    ! grep -q '{false}\|{true}' out.txt || fail "help $sub: parser noise {false}/{true}"
  done
  expect 0 "$bin" help
  grep -q '^Subcommands:' out.txt || fail "help alone does not list the subcommands"
  expect 2 "$bin" help nope
  one_error_line "no subcommand 'nope'"
  expect 2 "$bin" gen  # --output is required
  # The synopsis README's "The CLI in full" is generated from (docs_cli
  # checks README against it) names every flag each subcommand's --help has.
  local synopsis sub flag missing=""
  expect 0 "$bin" help --synopsis
  cp out.txt synopsis.txt
  for sub in run verify weights info gen serve submit query plan selfcheck "bench kernel" "bench ring"; do
    # The subcommand's entry: its first line and the indented ones after it.
    synopsis=$(awk -v s="ringattn $sub " 'index($0, s) { on = 1; print; next } on && /^ / { print; next } { on = 0 }' synopsis.txt)
    [[ -n $synopsis ]] || missing+=" $sub (no entry)"
    # shellcheck disable=SC2086  # "bench ring" is two words
    expect 0 "$bin" $sub --help
    ! grep -q 'TEXT:{' out.txt || fail "$sub --help: parser noise TEXT:{...}"
    for flag in $(grep -oE '^  (-[a-zA-Z], ?)?--[a-z0-9-]+' out.txt | grep -oE -- '--[a-z0-9-]+'); do
      [[ $flag == --help ]] && continue
      grep -q -- "$flag\b" <<<"$synopsis" || missing+=" $sub:$flag"
    done
  done
  [[ -z $missing ]] || fail "help --synopsis lacks:$missing"
}

# gen writes files that info describes and h5py reads, with the values the
# seed rule promises.
case_gen_info() {
  need_h5py
  expect 0 "$bin" gen --output a.h5 --heads 4 --kv-heads 2 --n 64 --n-kv 48 --d 16 --seed 5
  expect 0 "$bin" info a.h5
  grep -q '^input: OK' out.txt || fail "info does not call a.h5 a valid input"
  grep -Eq '^  q +\[1, 4, 64, 16\] f32, contiguous' out.txt || fail "info shows q wrongly"
  grep -Eq '^  k +\[1, 2, 48, 16\] f32, contiguous' out.txt || fail "info shows k wrongly"
  grep -q 'generator = "ringattn gen"' out.txt || fail "info does not show the generator"

  # f16, chunked with gzip, under mpirun: rank 0 alone writes.
  expect 0 mpi 2 "$bin" gen --output b.h5 --batch 2 --heads 2 --n 5000 --d 8 --dtype f16 \
    --gzip 3 --seed 9 --amplitude 2
  [[ $(grep -c '^ringattn: wrote' out.txt) -eq 1 ]] || fail "gen under mpirun did not write once"
  expect 0 "$bin" info --json b.h5
  "$py" - out.txt <<'EOF' || fail "info --json is wrong"
import json, sys
j = json.load(open(sys.argv[1]))
q = next(d for d in j["datasets"] if d["name"] == "q")
assert q["shape"] == [2, 2, 5000, 8] and q["dtype"] == "f16", q
assert q["layout"] == "chunked" and q["chunk"] == [1, 1, 4096, 8], q
assert [f["name"] for f in q["filters"]] == ["deflate"] and q["filters"][0]["params"] == [3], q
assert j["input"]["valid"] and j["input"]["dtype"] == "f16", j["input"]
assert j["attributes"]["seed"] == 9 and j["attributes"]["amplitude"] == 2.0, j["attributes"]
EOF

  "$py" - "$repo/tests/common" <<'EOF' || fail "h5py reads what gen wrote wrongly"
import sys
import h5py
import numpy as np

sys.path.insert(0, sys.argv[1])
from seeded_data import seeded  # gen's value rule

for path, seed, amp, dtype, shapes in [
    ("a.h5", 5, 1.0, np.float32, {"q": (1, 4, 64, 16), "k": (1, 2, 48, 16), "v": (1, 2, 48, 16)}),
    ("b.h5", 9, 2.0, np.float16, {"q": (2, 2, 5000, 8), "k": (2, 2, 5000, 8), "v": (2, 2, 5000, 8)}),
]:
    with h5py.File(path, "r") as f:
        assert sorted(f.keys()) == ["k", "q", "v"], list(f.keys())
        for t, (name, shape) in enumerate(shapes.items()):
            ds = f[name]
            assert ds.shape == shape and ds.dtype == dtype, (path, name, ds.shape, ds.dtype)
            data = ds[...].reshape(-1)
            for i in [0, 1, 777, data.size - 1]:
                want = dtype(seeded(seed + t, i, amp))
                assert data[i] == want, (path, name, i, data[i], want)
            assert np.all(np.abs(data) <= amp), (path, name)
        assert f.attrs["seed"] == seed and f.attrs["generator"] == "ringattn gen"
EOF
}

# An existing file is never replaced without --overwrite, and nothing is left behind.
case_gen_refuses() {
  expect 0 "$bin" gen --output g.h5 --n 32 --d 8
  local before
  before=$(md5sum <g.h5)
  expect 2 "$bin" gen --output g.h5 --n 64 --d 8
  one_error_line "exists"
  [[ $(md5sum <g.h5) == "$before" ]] || fail "gen changed the file it refused to replace"
  expect 0 "$bin" gen --output g.h5 --n 64 --d 8 --overwrite
  [[ $(md5sum <g.h5) != "$before" ]] || fail "gen --overwrite did not replace the file"
  mkdir d.h5
  expect 2 "$bin" gen --output d.h5 --overwrite
  one_error_line "directory"
  rm -f out.txt err.txt
  local f
  for f in .[!.]* *; do
    [[ -e $f && $f != g.h5 && $f != d.h5 ]] && fail "gen left a file behind: $f"
  done
  true
}

# gen -> run (2 ranks) -> verify passes; verify fails on a corrupted o and
# refuses an incomplete output.
case_run_verify() {
  need_h5py
  expect 0 "$bin" gen --output in.h5 --heads 4 --kv-heads 2 --n 256 --d 32 --seed 3
  expect 0 mpi 2 "$bin" run --input in.h5 --output out.h5 --causal --lse --threads 1
  expect 0 "$bin" verify --input in.h5 --output out.h5
  grep -q '^  rows    all 1024' out.txt || fail "verify did not check all 1024 rows"
  grep -q '^verify: PASS' out.txt || fail "verify did not say PASS"
  expect 0 mpi 2 "$bin" verify --input in.h5 --output out.h5
  [[ $(grep -c '^verify: PASS' out.txt) -eq 1 ]] || fail "verify under mpirun did not report once"

  cp out.h5 bad.h5
  "$py" -c "
import h5py
with h5py.File('bad.h5', 'r+') as f:
    f['o'][0, 2, 200, 7] += 1e-3
" || fail "h5py could not edit bad.h5"
  expect 1 "$bin" verify --input in.h5 --output bad.h5
  grep -q 'worst o\[0, 2, 200, 7\]' out.txt || fail "verify did not point at the corrupted element"
  grep -q '^verify: FAIL' out.txt || fail "verify did not say FAIL"

  cp out.h5 incomplete.h5
  "$py" -c "
import h5py
with h5py.File('incomplete.h5', 'r+') as f:
    del f.attrs['complete']
" || fail "h5py could not edit incomplete.h5"
  expect 3 "$bin" verify --input in.h5 --output incomplete.h5
  one_error_line "not complete"

  # Sampled rows (B*H*N = 8800 > 4096), f16 input and f16 o: the looser tolerance.
  expect 0 "$bin" gen --output in16.h5 --batch 2 --heads 4 --kv-heads 1 --n 1100 --d 16 \
    --dtype f16 --chunked
  expect 0 mpi 2 "$bin" run --input in16.h5 --output out16.h5 --out-dtype input --threads 1
  expect 0 "$bin" verify --input in16.h5 --output out16.h5 --rows 200 --seed 4
  grep -q '^  rows    200 of 8800' out.txt || fail "verify did not sample 200 of 8800 rows"
  grep -q '^  tol     1e-03 (default for an f16 o' out.txt || fail "verify chose the wrong tolerance"
}

# Progress under mpirun: in a log (mpirun's stderr a file), timestamped
# lines that say what the rate counts, and lines within a ring step (a
# step here is over a second: 24576 x 24576 keys at D = 64); on a terminal
# (script(1) gives mpirun one), the bar, though rank 0's stderr is a pipe;
# with --progress none, nothing.
case_progress() {
  expect 0 "$bin" gen --output in.h5 --heads 1 --n 49152 --d 64 --seed 1
  expect 0 mpi 2 "$bin" run --input in.h5 --output lines.h5 --threads 1 --progress-interval 0.01
  local stamp='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[+-][0-9]{4} progress: '
  grep -Eq "${stamp}1 chunks of 49152 query rows \(tokens x heads\); rate: query rows finished per second by this run" err.txt ||
    fail "no header line saying what the rate counts"
  grep -Eq "${stamp}100\.0% \(chunk 1\.00 of 1\), [0-9.e+]+ query rows/s, elapsed [0-9:]+, ETA 0:00:00$" err.txt ||
    fail "no timestamped last line"
  grep -Eo '\(chunk 0\.[0-9]{2} of 1\)' err.txt | grep -vqE '0\.(00|50) ' ||
    fail "no line from within a ring step (only chunk 0.00 and 0.50: the step boundaries)"
  ! grep -q $'\r' err.txt || fail "a bar went into a log file"

  rm -f lines.h5
  # script -c runs mpirun on a new terminal; what the terminal shows goes to tty.txt.
  script -qefc "$(printf '%q ' "$mpiexec" "$np_flag" 2 "${mpi_flags[@]}" "$bin" run \
    --input in.h5 --output bar.h5 --threads 1)" /dev/null </dev/null >tty.txt 2>&1 ||
    fail "mpirun on a terminal failed: $(tail -3 tty.txt)"
  grep -q $'\r\\[#*\\.*\\] ' tty.txt || fail "no bar on the terminal: $(head -c 400 tty.txt)"
  grep -q '\] 100\.0%  chunk 1\.00/1' tty.txt || fail "the bar did not reach 100%"
  ! grep -q ' progress: ' tty.txt || fail "lines on a terminal"

  expect 0 mpi 2 "$bin" run --input in.h5 --output none.h5 --threads 1 --progress none
  ! grep -q 'progress\|\]' err.txt || fail "--progress none printed progress"
  expect 2 "$bin" run --input in.h5 --output x.h5 --progress dots
  one_error_line "--progress"
}

# info on what is not HDF5: one line, the right exit code, also under mpirun.
case_info_not_hdf5() {
  echo "not an HDF5 file" >text.h5
  expect 3 "$bin" info text.h5
  one_error_line "not an HDF5 file"
  [[ ! -s out.txt ]] || fail "info printed to stdout for a non-HDF5 file"
  expect 4 "$bin" info missing.h5
  one_error_line "no such file"
  expect 3 mpi 2 "$bin" info text.h5
  one_error_line "not an HDF5 file"
  expect 3 "$bin" info --json text.h5
  one_error_line "not an HDF5 file"
}

# run_refused RC NEEDLE ARGS...: `ringattn run ARGS` on 2 ranks exits RC
# with one error line, naming NEEDLE.
run_refused() {
  expect "$1" mpi 2 "$bin" run "${@:3}"
  one_error_line "$2"
}

# run refusing bad input and bad configuration under mpirun: the exit code
# of the class, one line from rank 0 only, and no output (nor temporary file)
# written; an existing output is left byte for byte.
case_run_errors() {
  need_h5py
  expect 0 "$bin" gen --output in.h5 --heads 2 --n 64 --d 16
  "$py" -c "
import h5py, numpy as np
with h5py.File('in.h5') as f, h5py.File('nov.h5', 'w') as g, h5py.File('int.h5', 'w') as h:
    g['q'] = f['q'][:]; g['k'] = f['k'][:]
    h['q'] = f['q'][:].astype('i4'); h['k'] = f['k'][:]; h['v'] = f['v'][:]
with h5py.File('rank3.h5', 'w') as g:
    g['q'] = np.zeros((2, 64, 16), 'f4'); g['k'] = g['q'][:]; g['v'] = g['q'][:]
" || fail "h5py could not write the bad inputs"
  local before
  before=$(ls -A | sort)

  run_refused 3 "'v'" --input nov.h5 --output out.h5
  run_refused 3 "int.h5" --input int.h5 --output out.h5
  run_refused 3 "rank3.h5" --input rank3.h5 --output out.h5
  run_refused 4 "missing.h5" --input missing.h5 --output out.h5
  run_refused 2 "is the input" --input in.h5 --output in.h5
  printf '[run]\nthread = 2\n' >typo.toml
  run_refused 2 "unknown key 'run.thread'" --config typo.toml --input in.h5 --output out.h5
  printf '[attention]\ncausal = "yes"\n' >type.toml
  run_refused 2 "attention.causal must be true or false" --config type.toml --input in.h5 \
    --output out.h5
  printf '[run]\nkv_heads_per_chunk = 0\n' >range.toml
  run_refused 2 "run.kv_heads_per_chunk must be >= 1" --config range.toml --input in.h5 \
    --output out.h5
  printf '[run]\nbackend = "tpu"\n' >backend.toml
  run_refused 2 "run.backend must be" --config backend.toml --input in.h5 --output out.h5
  run_refused 2 "needs --backend cuda" --input in.h5 --output out.h5 --transport nccl
  # No GPU here (or a build without CUDA): one line, before any file is touched.
  if [[ $("$bin" --version) != *"CUDA: "*"device 0"* ]]; then
    run_refused 2 "backend cuda: " --input in.h5 --output out.h5 --backend cuda
  fi
  [[ $(ls -A | grep -v '\.toml$' | sort) == "$before" ]] || fail "a refused run left files: $(ls -A)"

  echo "earlier result" >out.h5
  run_refused 2 "exists" --input in.h5 --output out.h5
  [[ $(cat out.h5) == "earlier result" ]] || fail "the existing output was changed"
  expect 0 mpi 2 "$bin" run --input in.h5 --output out.h5 --overwrite --threads 1
}

# Settings from a config file and flags: a flag given overrides the file, a
# flag not given leaves it; --print-config loads back to itself; flags and
# the file refuse the same values in the same words; verify's flags too.
case_settings_flags() {
  printf '[attention]\ncausal = true\nscale = 0.5\n[run]\nthreads = 2\nkv_heads_per_chunk = 3\n' \
    >base.toml
  expect 0 "$bin" run --config base.toml --print-config --threads 5 --no-causal --out-dtype input
  grep -qx 'threads = 5' out.txt || fail "--threads did not override the config file"
  grep -qx 'causal = false' out.txt || fail "--no-causal did not override the config file"
  grep -qx "dtype = 'input'" out.txt || fail "--out-dtype did not set output.dtype"
  grep -qx 'kv_heads_per_chunk = 3' out.txt || fail "a flag not given replaced the file's value"
  grep -qx 'scale = 0.5' out.txt || fail "a flag not given replaced the file's scale"
  cp out.txt printed.toml
  expect 0 "$bin" run --config printed.toml --print-config
  cmp -s out.txt printed.toml || fail "--print-config did not load back to the same config"
  expect 2 "$bin" run --config base.toml --print-config --causal --no-causal
  expect 2 "$bin" run --print-config --scale 1e39
  one_error_line "ringattn: usage error: --scale must be 0 (1/sqrt(D)) or >= 1.17549e-38"
  printf '[attention]\nscale = 1e39\n' >big.toml
  expect 2 "$bin" run --print-config --config big.toml
  one_error_line "big.toml: attention.scale must be 0 (1/sqrt(D)) or >= 1.17549e-38"
  expect 0 "$bin" run --help
  grep -Eq -- '--comm-timeout NUMBER .*\(0: wait forever\) \[default: 1800\]' out.txt ||
    fail "run --help does not show --comm-timeout's default"
  grep -Eq -- '--backend cpu\|cuda ' out.txt || fail "run --help does not list the backends"

  expect 0 "$bin" gen --output in.h5 --n 32 --d 8
  expect 0 "$bin" run --input in.h5 --output out.h5 --threads 1
  local bad
  for bad in nan inf 0 -1; do
    expect 2 "$bin" verify --input in.h5 --output out.h5 --tolerance "$bad"
    one_error_line "ringattn: usage error: --tolerance must be"
  done
  expect 2 "$bin" verify --input in.h5 --output out.h5 --rows -1
  one_error_line "ringattn: usage error: --rows must be >= 0, got -1"
  # The subcommands' own flags: bounds in words, one line (not CLI11's
  # "not in range 0.000000 to <309 digits>").
  expect 2 "$bin" gen --output x.h5 --amplitude -1
  one_error_line "ringattn: usage error: --amplitude: must be > 0, got -1"
  expect 2 "$bin" bench kernel --d 100000
  one_error_line "ringattn: usage error: --d: must be in 1..256, got 100000"
  expect 2 "$bin" gen --output x.h5 --no-such-flag
  one_error_line "ringattn: usage error: The following argument was not expected: --no-such-flag"
  [[ ! -e x.h5 ]] || fail "a refused gen wrote its output"
  expect 0 "$bin" verify --input in.h5 --output out.h5 --tolerance 1e-4 --rows 0
}

# Ranks started with different settings (an MPMD launch): refused before any
# work, with one line from rank 0 naming the first differing setting and
# two ranks' values, exit 2 (every rank), and no output written.
case_settings_agreed() {
  expect 0 "$bin" gen --output in.h5 --heads 2 --n 64 --d 16
  local tag=() before
  # Open MPI tags each line with its rank: check that rank 0 printed it.
  [[ $("$mpiexec" --version 2>&1) == *"Open MPI"* || $("$mpiexec" --version 2>&1) == *OpenRTE* ]] &&
    tag=(--tag-output)
  listing() { ls -A | grep -v -e '^out\.txt$' -e '^err\.txt$' -e '\.toml$' | sort; }
  before=$(listing)
  mpmd() {
    expect 2 "$mpiexec" "${mpi_flags[@]}" "${tag[@]}" "$@"
    [[ $(listing) == "$before" ]] || fail "a refused MPMD run left files: $(ls -A)"
    if ((${#tag[@]})); then
      [[ $(grep -c 'ringattn: ' err.txt) -eq 1 ]] || fail "expected one 'ringattn:' line"
      grep -q '^\[[0-9]*,0\]<stderr>:ringattn: usage error: ranks were started' err.txt ||
        fail "the line did not come from rank 0"
      sed -i 's/^\[[0-9]*,[0-9]*\]<std[a-z]*>://' err.txt
    fi
  }
  local run=(run --input in.h5 --output out.h5 --threads 1)
  mpmd "$np_flag" 1 "$bin" "${run[@]}" --causal : "$np_flag" 1 "$bin" "${run[@]}"
  one_error_line "different settings: attention.causal is true on rank 0 but false on rank 1"
  # --lse on some ranks only used to hang: the others never wrote lse.
  mpmd "$np_flag" 2 "$bin" "${run[@]}" --lse : "$np_flag" 1 "$bin" "${run[@]}"
  one_error_line "different settings: output.lse is true on rank 0 but false on rank 2"
  printf '[ring]\npartition = "striped"\n' >striped.toml
  mpmd "$np_flag" 1 "$bin" "${run[@]}" : "$np_flag" 2 "$bin" "${run[@]}" --config striped.toml
  one_error_line 'ring.partition is "auto" on rank 0 but "striped" on rank 1'
  # The same settings from different spellings agree, and the run works.
  printf '[attention]\ncausal = true\n' >causal.toml
  expect 0 "$mpiexec" "${mpi_flags[@]}" "$np_flag" 1 "$bin" "${run[@]}" --causal : \
    "$np_flag" 2 "$bin" "${run[@]}" --config causal.toml
  [[ -f out.h5 ]] || fail "the agreed MPMD run wrote no output"
}

# --window L[,R] end to end: runs on 2 and 3 ranks pass verify (which reads
# the window from the output's attributes: with the attribute edited to
# "none" the same output fails), TOML spells it as an integer or text, bad
# windows are one usage line with nothing written, a bad attribute one input
# line.
case_window() {
  need_h5py
  expect 0 "$bin" gen --output in.h5 --n 700 --heads 2 --d 16
  local np w
  for np in 2 3; do
    for w in 50,10 0 300; do
      rm -f out.h5
      expect 0 mpi "$np" "$bin" run --input in.h5 --output out.h5 --window "$w" --lse --threads 1
      expect 0 "$bin" verify --input in.h5 --output out.h5
      grep -q "window $w" out.txt || fail "verify's plan does not name window $w"
    done
  done
  rm -f out.h5
  printf '[attention]\ncausal = true\nwindow = 64\n' >w.toml
  expect 0 "$bin" run --config w.toml --print-config
  grep -qx "window = '64'" out.txt || fail "window = 64 in TOML did not print back as '64'"
  expect 0 mpi 2 "$bin" run --config w.toml --input in.h5 --output out.h5 --threads 1
  expect 0 "$bin" verify --input in.h5 --output out.h5
  "$py" -c 'import h5py, sys; f = h5py.File("out.h5", "r+"); assert f.attrs["window"] == "64", f.attrs["window"]; f.attrs["window"] = "none"'
  expect 1 "$bin" verify --input in.h5 --output out.h5
  grep -q 'verify: FAIL' out.txt || fail "verify passed an output whose window attribute was changed"
  "$py" -c 'import h5py; h5py.File("out.h5", "r+").attrs["window"] = "wide"'
  expect 3 "$bin" verify --input in.h5 --output out.h5
  one_error_line "attribute 'window' is not a window"
  local bad
  for bad in -3 1,2,3 abc 1.5; do
    expect 2 "$bin" run --input in.h5 --output bad.h5 --window "$bad"
    one_error_line "ringattn: usage error: --window must be"
    [[ ! -e bad.h5 ]] || fail "a refused --window $bad wrote its output"
  done
  printf '[attention]\nwindow = 1.5\n' >bad.toml
  expect 2 "$bin" run --config bad.toml --input in.h5 --output bad.h5
  one_error_line "bad.toml: attention.window must be a string"
  [[ ! -e bad.h5 ]] || fail "a refused window in TOML wrote its output"
}

# Packed sequences end to end: gen --docs writes cu_seqlens (and the _q/_k
# pair for cross-attention), info reports them, run at 1-3 ranks under
# several partitions (auto is balanced; the output, its config and the
# metrics record the one that ran) and verify pass, causal and windowed;
# verify refuses an output computed over other sequences; bad offsets
# (decreasing, not from 0, not to N, float, 2-D, a lone cu_seqlens_q, B > 1)
# are one usage line naming the dataset and entry, exit 2, nothing written.
case_packed() {
  need_h5py
  expect 0 "$bin" gen --output in.h5 --n 900 --heads 2 --d 16 --docs 1,0,5,300,2,592
  expect 0 "$bin" info in.h5
  grep -q "sequences: 6 packed (cu_seqlens).*min 0, median 5.*max 592, 1 empty" out.txt ||
    fail "info does not report the packed sequences"
  local np part
  for np in 1 2 3; do
    for part in auto zigzag striped; do
      rm -f out.h5 metrics.json
      local flags=(--threads 1 --lse --causal --window 40 --metrics metrics.json)
      [[ $part == auto ]] || flags+=(--partition "$part")
      expect 0 mpi "$np" "$bin" run --input in.h5 --output out.h5 "${flags[@]}"
      [[ $part != auto ]] || grep -q "6 packed sequences, balanced partition" out.txt ||
        fail "run's wrote line does not name the packed sequences and the balanced partition"
      # The partition that ran (auto: balanced) is the one the output, its
      # config and the metrics record.
      "$py" - "${part/auto/balanced}" <<'PY' || fail "the $part run records another partition"
import h5py, json, sys
want = sys.argv[1]
a = h5py.File("out.h5", "r").attrs
m = json.load(open("metrics.json"))
got = [a["partition"], json.loads(a["config"])["ring"]["partition"],
       m["problem"]["partition"], m["config"]["ring"]["partition"]]
assert got == [want] * 4, (want, got)
PY
      expect 0 "$bin" verify --input in.h5 --output out.h5 --rows 0
      grep -q "6 packed sequences" out.txt || fail "verify's plan does not name the sequences"
    done
  done
  "$py" -c 'import h5py; f = h5py.File("out.h5", "r"); assert f.attrs["documents"] == 6, f.attrs["documents"]'
  expect 0 "$bin" gen --output other.h5 --n 900 --heads 2 --d 16 --docs 450,450
  expect 3 "$bin" verify --input other.h5 --output out.h5
  one_error_line "was computed over 6 packed sequences, but input file 'other.h5' holds 2"
  # Cross-attention packed: cu_seqlens_q over 300 query tokens, _k over 500 keys.
  expect 0 "$bin" gen --output cross.h5 --n 300 --n-kv 500 --heads 2 --d 16 --docs longtail:7
  rm -f out.h5
  expect 0 mpi 2 "$bin" run --input cross.h5 --output out.h5 --threads 1 --causal
  expect 0 "$bin" verify --input cross.h5 --output out.h5 --rows 0
  # Bad offsets: NAME=PYTHON-VALUE|the message.
  local bad
  for bad in "cu_seqlens=[0,500,400,900]|entry .2. is 400, less than entry .1. = 500" \
    "cu_seqlens=[3,900]|entry .0. is 3" "cu_seqlens=[0,800]|entry .1. (the last) is 800" \
    "cu_seqlens=np.array([0.0,900.0])|packed offsets are int32 or int64" \
    "cu_seqlens=np.zeros((2,2),dtype=np.int64)|packed offsets are 1-D" \
    "cu_seqlens_q=[0,900]|without 'cu_seqlens_k'"; do
    local assign=${bad%%|*} msg=${bad#*|}
    "$py" - "$assign" <<'PY'
import h5py, numpy as np, shutil, sys
shutil.copy('in.h5', 'bad.h5')
f = h5py.File('bad.h5', 'r+')
del f['cu_seqlens']
name, value = sys.argv[1].split('=', 1)
v = eval(value)
f[name] = np.asarray(v, dtype=np.int64) if isinstance(v, list) else v
PY
    rm -f bad_out.h5
    expect 2 mpi 2 "$bin" run --input bad.h5 --output bad_out.h5 --threads 1
    one_error_line "$msg"
    grep -q "'cu_seqlens" err.txt || fail "the error does not name the offsets' dataset"
    [[ ! -e bad_out.h5 ]] || fail "bad offsets ($assign) wrote an output"
  done
  expect 0 "$bin" gen --output b2.h5 --n 100 --batch 2 --heads 1 --d 8
  "$py" -c 'import h5py, numpy as np; h5py.File("b2.h5", "r+")["cu_seqlens"] = np.array([0, 100])'
  expect 2 "$bin" run --input b2.h5 --output bad_out.h5
  one_error_line "packed sequences need batch B = 1"
  expect 2 "$bin" gen --output x.h5 --n 10 --docs 3,3
  one_error_line "the lengths sum to 6 tokens, not the 10"
  [[ ! -e x.h5 ]] || fail "gen with bad --docs wrote its file"
  # Every shipped config loads (the packed genomics one among them).
  local cfg
  for cfg in "$(dirname "${BASH_SOURCE[0]}")"/../../configs/*.toml; do
    expect 0 "$bin" run --config "$cfg" --print-config
  done
  expect 0 "$bin" run --config "$(dirname "${BASH_SOURCE[0]}")/../../configs/genomics-packed.toml" \
    --print-config
  grep -q "^partition = .balanced." out.txt ||
    fail "configs/genomics-packed.toml does not print back partition = balanced"
}

# bench kernel on a tiny problem, one JSON object on stdout.
bench_json() {
  expect 0 "$bin" bench kernel --n 64 --d 16 --heads 1 --reps 1 --warmup 0 --threads 1 --json "$@"
}
# json_field NAME: the field of the JSON object in out.txt.
json_field() {
  "$py" -c 'import json, sys; print(json.load(open("out.txt"))[sys.argv[1]])' "$1"
}
# The vector paths, narrowest first, and the widest this CPU runs (native).
vector_paths=(generic avx2 avx512)
widest_path() {
  bench_json
  json_field vector_path
}

# bench kernel --tiles, --vector-path and --bf16-products: --help lists them with their
# choices; every tile shape runs here (the two ISAs' shapes differ, native is
# one of them), every vector path up to this CPU's widest runs and is the one
# reported; names that are no choice are refused with exit 2.
case_bench_kernel_variants() {
  need_h5py  # its Python reads the JSON
  expect 0 "$bin" bench kernel --help
  grep -q -- '--tiles native|avx2|avx512' out.txt || fail "--help does not list --tiles"
  grep -q -- '--vector-path native|avx512|avx2|generic' out.txt ||
    fail "--help does not list --vector-path"
  local t shape native
  declare -A shapes=()
  for t in native avx2 avx512; do
    bench_json --tiles "$t"
    [[ $(json_field tiles) == "$t" ]] || fail "--tiles $t: the report says $(json_field tiles)"
    shape=$(json_field implementation | grep -o 'bq=[0-9]* bk=[0-9]*') ||
      fail "--tiles $t: no tile shape in the report"
    shapes[$t]=$shape
  done
  [[ ${shapes[avx2]} != "${shapes[avx512]}" ]] || fail "avx2 and avx512 tiles both ran ${shapes[avx2]}"
  native=${shapes[native]}
  [[ $native == "${shapes[avx2]}" || $native == "${shapes[avx512]}" ]] ||
    fail "native tiles ($native) are neither ISA's shape"

  local widest p
  widest=$(widest_path)
  for p in "${vector_paths[@]}"; do
    bench_json --vector-path "$p" --tiles avx512
    [[ $(json_field vector_path) == "$p" ]] || fail "--vector-path $p ran $(json_field vector_path)"
    json_field implementation | grep -q "softmax-$p " || fail "--vector-path $p: not in the report"
    [[ $p != "$widest" ]] || break
  done
  expect 2 "$bin" bench kernel --tiles avx1024
  expect 2 "$bin" bench kernel --vector-path sse2

  # --bf16-products: fp32 runs everywhere; amx where the CPU has AMX-BF16
  # (then native is amx, and the record has the tdpbf16ps peak; elsewhere amx
  # is refused); dot where it has AVX512_BF16 (native there without AMX, and
  # the record has the vdpbf16ps peak), else native is fp32 and dot is
  # refused (case_bench_kernel_refusal).
  bench_json --compute bf16 --bf16-products fp32
  [[ $(json_field bf16_products) == fp32 ]] || fail "--bf16-products fp32 ran $(json_field bf16_products)"
  json_field implementation | grep -q 'products=fp32' || fail "products=fp32 not in the report"
  bench_json --compute bf16
  native=$(json_field bf16_products)
  if grep -qw amx_bf16 /proc/cpuinfo && grep -qw amx_tile /proc/cpuinfo; then
    [[ $native == amx ]] || fail "AMX-BF16 here, yet native bf16 products are $native"
    json_field implementation | grep -q 'products=amx' || fail "products=amx not in the report"
    "$py" -c 'import json; j = json.load(open("out.txt")); assert j["amx_peak_gflops"] > 0 and 0 < j["fraction_of_amx_peak"] < 2, j' ||
      fail "the amx run's record lacks its AMX peak"
  else
    expect 2 "$bin" bench kernel --n 64 --d 16 --heads 1 --reps 1 --compute bf16 --bf16-products amx
  fi
  if grep -q avx512_bf16 /proc/cpuinfo; then
    grep -qw amx_bf16 /proc/cpuinfo || [[ $native == dot ]] ||
      fail "AVX512_BF16 here, yet native bf16 products are $native"
    bench_json --compute bf16 --bf16-products dot
    json_field implementation | grep -q 'products=dot' || fail "products=dot not in the report"
    "$py" -c 'import json; j = json.load(open("out.txt")); assert j["bf16_peak_gflops"] > 0 and 0 < j["fraction_of_bf16_peak"] < 2, j' ||
      fail "the dot run's record lacks its bf16 peak"
  else
    [[ $native == fp32 ]] || fail "no AVX512_BF16 here, yet native bf16 products are $native"
  fi
  expect 2 "$bin" bench kernel --bf16-products vnni
}

# weights: a causal run's rows against numpy's float64 softmax of the same
# q and k (masked keys 0, each row summing to 1), top-K the largest of the
# full rows, packed sequences kept apart, the plot helper's files, and bad
# requests one line, exit 2.
case_weights() {
  need_h5py
  expect 0 "$bin" gen --output in.h5 --n 300 --heads 2 --kv-heads 1 --d 16 --dtype f16
  expect 0 mpi 2 "$bin" run --input in.h5 --output out.h5 --causal --lse --progress none
  expect 0 "$bin" weights --input in.h5 --output out.h5 --rows 0,5,100:300:50 --to w.h5
  grep -q "max |run's lse - exact lse|" out.txt || fail "weights: no lse comparison"
  expect 0 "$bin" weights --input in.h5 --output out.h5 --rows 0,5,100:300:50 --top-k 7 --to t.h5
  expect 0 "$bin" gen --output docs.h5 --n 300 --heads 1 --d 8 --docs 120,180
  expect 0 mpi 2 "$bin" run --input docs.h5 --output docs_out.h5 --causal --progress none
  expect 0 "$bin" weights --input docs.h5 --output docs_out.h5 --rows 119,120,299 --to dw.h5
  # Split over ranks (keys 300 = 100 + 100 + 100, 75 x 4): the same rows.
  expect 0 mpi 3 "$bin" weights --input in.h5 --output out.h5 --rows 0,5,100:300:50 --to w3.h5
  grep -q "3 ranks" out.txt || fail "weights under mpirun did not run on 3 ranks"
  expect 0 mpi 4 "$bin" weights --input in.h5 --output out.h5 --rows 0,5,100:300:50 --top-k 7 \
    --to t4.h5
  expect 0 mpi 2 "$bin" weights --input docs.h5 --output docs_out.h5 --rows 119,120,299 \
    --to dw2.h5
  "$py" -c '
import h5py, numpy as np
for one, many in (("w.h5", "w3.h5"), ("t.h5", "t4.h5"), ("dw.h5", "dw2.h5")):
    a, b = h5py.File(one), h5py.File(many)
    assert sorted(a) == sorted(b), (one, sorted(a), sorted(b))
    for name in a:
        x, y = a[name][:], b[name][:]
        if name == "lse" or x.dtype.kind == "f":
            assert np.abs(x - y).max() <= 1e-6, (one, name, np.abs(x - y).max())
        else:
            assert (x == y).all(), (one, name)
' || fail "weights on several ranks differ from one rank"
  "$py" -c '
import h5py, numpy as np
f, w, t = h5py.File("in.h5"), h5py.File("w.h5"), h5py.File("t.h5")
rows = w["rows"][:]
assert list(rows) == [0, 5, 100, 150, 200, 250] and list(w["heads"][:]) == [0, 1]
scale = 1 / np.sqrt(16)
for h in range(2):
    q = f["q"][0, h].astype(np.float64)[rows]
    k = f["k"][0, 0].astype(np.float64)
    s = q @ k.T * scale
    s[np.arange(300)[None, :] > rows[:, None]] = -np.inf
    ref = np.exp(s - s.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    got = w["weights"][0, h]
    assert np.abs(got - ref).max() < 1e-6, np.abs(got - ref).max()
    assert np.abs(got.sum(1) - 1).max() < 1e-6
    assert (got[np.arange(300)[None, :] > rows[:, None]] == 0).all()
    keys, tw = t["top_keys"][0, h], t["top_weights"][0, h]
    for r in range(len(rows)):
        seen = min(7, rows[r] + 1)
        order = np.argsort(-ref[r], kind="stable")[:seen]
        assert set(keys[r, :seen]) == set(order), (r, keys[r], order)
        assert (keys[r, seen:] == -1).all() and (tw[r, seen:] == 0).all()
        assert np.allclose(tw[r, :seen], got[r, keys[r, :seen]], rtol=0, atol=1e-7)
        assert (np.diff(tw[r, :seen]) <= 0).all()
d = h5py.File("dw.h5")["weights"][0, 0]
assert (d[0, 120:] == 0).all() and (d[1, :120] == 0).all() and d[1, 120] == 1.0
assert (d[2, :120] == 0).all() and abs(d[2].sum() - 1) < 1e-6
' || fail "weights: the file does not hold the float64 softmax"
  expect 0 "$py" "$repo/datasets/plot_weights.py" w.h5 --out plot --row 100 --heatmap
  expect 0 "$py" "$repo/datasets/plot_weights.py" t.h5 --out top --row 250 --head 1
  for f in plot_b0_h0_row100 plot_b0_h0_heatmap top_b0_h1_row250; do
    for ext in png pdf; do [[ -s $f.$ext ]] || fail "plot_weights did not write $f.$ext"; done
  done
  expect 2 "$bin" weights --input in.h5 --output out.h5 --rows 300 --to x.h5
  one_error_line "'300' is not an index"
  expect 2 "$bin" weights --input in.h5 --output out.h5 --heads 0:5 --to x.h5
  one_error_line "weights --heads: '0:5'"
  expect 2 "$bin" weights --input in.h5 --output out.h5 --rows 1 --to w.h5
  one_error_line "exists"
  expect 2 mpi 3 "$bin" weights --input in.h5 --output out.h5 --rows 1 --to w.h5
  one_error_line "exists"
  expect 2 mpi 3 "$bin" weights --input in.h5 --output out.h5 --rows 300 --to x.h5
  one_error_line "'300' is not an index"
  [[ ! -e x.h5 ]] || fail "a refused weights request left x.h5"
}

# plan: the table and the JSON agree with the model's promises (one row per
# rank count, efficiency <= 1, a measured rate when none is given, a row
# that cannot run says why), and bad input is one line, exit 2.
case_plan() {
  expect 0 "$bin" plan --n 4096 --d 16 --heads 2 --causal --ranks 1,2,3,5000 --rate 50 --json
  "$py" -c '
import json
j = json.load(open("out.txt"))
rows = j["rows"]
assert [r["ranks"] for r in rows] == [1, 2, 3, 5000], rows
assert rows[0]["exposed_s"] == 0 and abs(rows[0]["efficiency"] - 1) < 1e-12, rows[0]
assert all(r["efficiency"] <= 1 + 1e-12 for r in rows[:3]), rows
assert not rows[3]["fits"] and rows[3]["why"] == "fewer tokens than ranks", rows[3]
assert j["machine"]["rate_source"] == "given" and j["min_tokens_per_rank_to_hide"] > 0, j
' || fail "plan --json: unexpected record"
  expect 0 "$bin" plan --n 2048 --d 16 --heads 1 --ranks 2 --threads 1
  grep -q "measured here" out.txt || fail "plan without --rate did not measure"
  grep -q "^     2 " out.txt || fail "plan: no row for 2 ranks"
  expect 2 "$bin" plan --n 64 --heads 3 --kv-heads 2 --rate 1
  one_error_line "heads 3 must be a multiple of kv heads 2"
  expect 2 "$bin" plan --n 64 --ranks 2,x --rate 1
  one_error_line "plan --ranks must be an integer, got 'x'"
  # --measure-link: the ranks time the hop between them (shared memory here).
  expect 0 mpi 2 "$bin" plan --n 8192 --d 16 --heads 2 --ranks 2 --rate 50 --measure-link --json
  "$py" -c '
import json
m = json.load(open("out.txt"))["machine"]
assert m["link_source"].startswith("measured between 2 ranks"), m
assert m["bandwidth_gbps"] > 0 and 0 < m["latency_s"] < 0.1, m
' || fail "plan --measure-link: no measured link in the record"
  expect 2 "$bin" plan --n 64 --rate 1 --measure-link
  one_error_line "needs 2 or more ranks"
  expect 2 "$bin" plan --n 64 --rate 1 --measure-link --latency 3
  one_error_line "excludes"
}

# A vector path wider than this CPU's is refused before anything runs: one
# line naming the flag, exit 2; so are bf16 dot products without AVX512_BF16. On a CPU that runs every path the check runs
# the binary under qemu-x86_64 emulating an AVX2 CPU (Haswell) when qemu-user
# is installed, and is skipped (77) otherwise.
case_bench_kernel_refusal() {
  need_h5py
  local widest p i refused=0
  widest=$(widest_path)
  if [[ $widest == "${vector_paths[-1]}" ]]; then
    command -v qemu-x86_64 >/dev/null ||
      skip "this CPU runs every vector path (widest: $widest), and qemu-x86_64" \
        "(apt-get install qemu-user) is not there to emulate one that does not"
    # qemu warns about CPUID bits it does not emulate: only the program's
    # lines count. Filtered after qemu exits (a process substitution could
    # still be writing when the caller reads err.txt).
    printf '#!/bin/bash\nerr=$(mktemp)\nrc=0\nqemu-x86_64 -cpu Haswell %q "$@" 2>"$err" || rc=$?\ngrep -v "TCG doesn.t support" "$err" >&2\nrm -f "$err"\nexit "$rc"\n' \
      "$bin" >emulated.sh
    chmod +x emulated.sh
    bin=$PWD/emulated.sh
    widest=$(widest_path)
    echo "this CPU runs every vector path: checking under qemu-x86_64 -cpu Haswell (widest: $widest)"
  fi
  for ((i = ${#vector_paths[@]} - 1; i >= 0; --i)); do
    p=${vector_paths[i]}
    [[ $p != "$widest" ]] || break
    expect 2 "$bin" bench kernel --n 64 --d 16 --heads 1 --reps 1 --vector-path "$p"
    one_error_line "bench kernel --vector-path $p: this CPU cannot run it (widest here: $widest)"
    [[ ! -s out.txt ]] || fail "--vector-path $p: refused, yet it printed a report"
    refused=$((refused + 1))
  done
  [[ $refused -gt 0 ]] || fail "no vector path was refused (widest: $widest)"
  # Haswell (or this CPU, when it lacks the ISA) has no AVX512_BF16.
  if [[ $bin == "$PWD/emulated.sh" ]] || ! grep -q avx512_bf16 /proc/cpuinfo; then
    expect 2 "$bin" bench kernel --n 64 --d 16 --heads 1 --reps 1 --compute bf16 --bf16-products dot
    one_error_line "bench kernel --bf16-products dot: this CPU has no AVX512_BF16"
  fi
}

# check_json PYTHON_EXPR: the JSON object in out.txt, as j, makes the
# expression true (out.txt holds one object, rank 0's under mpirun).
check_json() {
  "$py" -c 'import json, sys; j = json.load(open("out.txt")); assert eval(sys.argv[1]), j' "$1" ||
    fail "the JSON record fails: $1"
}

# bench kernel --backward and, on 2 ranks, bench ring --backward on small
# problems, causal and not: one JSON object each saying "pass": "backward",
# flops 2.5x the forward's on the same problem, positive GFLOP/s (no timing
# bounds: the machine is shared); the text forms say backward. A backward the
# kernel has not (--compute bf16; --backend cuda, with or without a device)
# is refused before anything runs: one line, exit 2, no report.
case_bench_backward() {
  need_h5py # its Python reads the JSON
  local causal fwd sub small=(--n 96 --d 16 --heads 2 --kv-heads 1 --reps 1 --warmup 0 --threads 1)
  for causal in "" --causal; do
    # shellcheck disable=SC2086 # $causal: no flag or one
    expect 0 "$bin" bench kernel "${small[@]}" --json $causal
    check_json 'j["pass"] == "forward"'
    fwd=$(json_field flops)
    # shellcheck disable=SC2086
    expect 0 "$bin" bench kernel "${small[@]}" --json --backward $causal
    check_json 'j["pass"] == "backward" and j["implementation"].startswith("backward ")'
    check_json "j['gflops'] > 0 and j['fraction_of_peak'] > 0 and j['peak_gflops'] > 0"
    check_json "abs(j['flops'] - 2.5 * $fwd) <= 1e-9 * j['flops'] and j['causal'] == ('$causal' != '')"
  done
  expect 0 "$bin" bench kernel "${small[@]}" --backward
  grep -q '^pass   backward' out.txt || fail "bench kernel --backward: the text does not say backward"
  grep -q '^speed  .* GFLOP/s = .* of the .* FMA peak' out.txt ||
    fail "bench kernel --backward: no speed line"

  local ring=(bench ring --n 200 --d 16 --heads 2 --kv-heads 1 --threads 1 --p2p-iters 1)
  for causal in "" --causal; do
    # shellcheck disable=SC2086
    expect 0 mpi 2 "$bin" "${ring[@]}" --json $causal
    check_json 'j["pass"] == "forward"'
    fwd=$(json_field flops | tr -d '[] ' | tr ',' '+')
    # shellcheck disable=SC2086
    expect 0 mpi 2 "$bin" "${ring[@]}" --json --backward $causal
    check_json 'j["pass"] == "backward" and j["ranks"] == 2 and len(j["steps"]) == 2'
    check_json "j['gflops'] > 0 and j['efficiency'] > 0 and j['seconds_one_rank'] > 0"
    check_json "abs(sum(j['flops']) - 2.5 * ($fwd)) <= 1e-9 * sum(j['flops'])"
    check_json "0 < j['visible_fraction'] <= 1 and j['p2p']['bytes'] > 0"
    check_json "j['home_hop_wait_s'] >= 0 and 0 <= j['overlap'] <= 1"
  done
  expect 0 mpi 2 "$bin" "${ring[@]}" --backward --causal
  grep -q '^ring   backward, 2 ranks' out.txt || fail "bench ring --backward: the text does not say backward"
  grep -q 'efficiency [0-9]' out.txt || fail "bench ring --backward: no efficiency in the text"

  expect 2 "$bin" bench kernel "${small[@]}" --backward --compute bf16
  one_error_line "bench kernel --backward: the backward computes in f32 only, not --compute bf16"
  [[ ! -s out.txt ]] || fail "--backward --compute bf16: refused, yet it printed a report"
  expect 2 "$bin" bench kernel "${small[@]}" --backward --backend cuda
  one_error_line "bench kernel --backward: the backward runs on the CPU only, not --backend cuda"
  [[ ! -s out.txt ]] || fail "--backward --backend cuda: refused, yet it printed a report"
  expect 2 mpi 2 "$bin" "${ring[@]}" --backward --compute bf16
  one_error_line "bench ring --backward: the backward computes in f32 only, not --compute bf16"
  [[ ! -s out.txt ]] || fail "bench ring --backward --compute bf16: refused, yet it printed a report"
  for sub in kernel ring; do
    expect 0 "$bin" bench "$sub" --help
    grep -q -- '--backward' out.txt || fail "bench $sub --help does not list --backward"
  done
}

# run --backward (2 ranks) on gen --backward inputs, then verify checks dq,
# dk and dv (dk, dv given the run's o and lse) and passes: causal GQA,
# cross-attention, packed sequences; a corrupted dk fails naming it; an
# input without its do is one line, exit 3.
case_backward_verify() {
  need_h5py
  expect 0 "$bin" gen --output in.h5 --heads 4 --kv-heads 2 --n 96 --d 16 --seed 3 --backward
  expect 0 mpi 2 "$bin" run --input in.h5 --output out.h5 --causal --backward
  expect 0 "$bin" verify --input in.h5 --output out.h5
  grep -q "^  grads   dq on those rows, dO from the input's 'do'" out.txt ||
    fail "verify's plan does not say it checks dq"
  grep -q "^  keys    dk, dv on all 192 (b, kv head, j) key rows, given the run's o and lse" out.txt ||
    fail "verify's plan does not say it checks dk, dv on all 192 key rows"
  for g in dq dk dv; do
    grep -q "^  $g      max |$g - ref|" out.txt || fail "verify does not report $g"
  done
  grep -q '^verify: PASS' out.txt || fail "verify did not pass run --backward's gradients"

  "$py" - <<'PY' || fail "could not corrupt dk"
import shutil
import h5py
shutil.copy("out.h5", "bad.h5")
with h5py.File("bad.h5", "r+") as f:
    f["dk"][0, 1, 10, 3] += 1.0
PY
  expect 1 "$bin" verify --input in.h5 --output bad.h5
  grep -q 'worst dk\[0, 1, 10, 3\]' out.txt || fail "verify did not point at the corrupted dk element"
  grep -q '^verify: FAIL: dk beyond tolerance' out.txt || fail "verify did not fail naming dk"

  # Cross-attention (N != N_k), query and key rows sampled; packed sequences, every row.
  expect 0 "$bin" gen --output cross.h5 --heads 2 --kv-heads 1 --n 2600 --n-kv 4200 --d 8 \
    --seed 5 --backward
  expect 0 mpi 2 "$bin" run --input cross.h5 --output cross_out.h5 --backward
  expect 0 "$bin" verify --input cross.h5 --output cross_out.h5 --rows 64
  grep -q '^  rows    64 of 5200' out.txt || fail "cross: verify did not sample 64 of 5200 query rows"
  grep -q '^  keys    dk, dv on 64 of 4200' out.txt || fail "cross: verify did not sample 64 of 4200 key rows"
  grep -q '^verify: PASS' out.txt || fail "cross: verify did not pass"
  expect 0 "$bin" gen --output packed.h5 --heads 2 --n 100 --d 8 --seed 7 --docs 30,1,0,69 --backward
  expect 0 mpi 2 "$bin" run --input packed.h5 --output packed_out.h5 --causal --backward
  expect 0 "$bin" verify --input packed.h5 --output packed_out.h5 --rows 0
  grep -q '4 packed sequences' out.txt || fail "packed: verify's plan does not name the sequences"
  grep -q '^verify: PASS' out.txt || fail "packed: verify did not pass"

  # The input without the do the output names: one line, exit 3.
  expect 0 "$bin" gen --output no_do.h5 --heads 4 --kv-heads 2 --n 96 --d 16 --seed 3
  expect 3 "$bin" verify --input no_do.h5 --output out.h5
  one_error_line "dataset 'do': no such dataset"
}

"case_$case_name"
echo "ok [$case_name]"
