#!/usr/bin/python3
"""Strong and weak scaling study of `ringattn run` (see docs/scaling.md).

For every point of a sweep (ranks x lengths, strong and/or weak) this driver
makes a seeded input with `ringattn gen` (cached by shape), runs
`ringattn run --metrics` under mpirun (locally) or as one Slurm batch job
(`sbatch --wait`), reads the metrics JSON and writes

    DIR/results.csv            one row per point (ok, skipped or failed), with the
                               repeats' spread and the context (host, CPU, commit, date)
    DIR/time_vs_ranks.png      job wall time against ranks, with the ideal
    DIR/gflops_per_rank.png    attention GFLOP/s per rank against ranks
    DIR/efficiency.png         parallel efficiency against ranks (axis from 0)
    DIR/breakdown.png          compute / communication wait / I/O / other, per point
    DIR/runs/<id>/             per run: metrics.json, log.txt (and job.sbatch)

every plot also as PDF (--plot-formats), at 200 dpi (--dpi), with error bars
min..max over --repeats, solid black ideal lines named in the legend, and the
context as a caption line under the plot.

Lengths mean the total sequence length N in strong mode and the tokens per
rank in weak mode (N = lengths x ranks). Efficiency, for both modes, is the
attention throughput per rank against the baseline's (the fewest ranks of
the series that completed, normally 1):

    efficiency = (flops_P / T_P / P) / (flops_b / T_b / P_b)

which is T_b·P_b / (P·T_P) in strong mode (same flops) and, in weak mode,
accounts for the attention work growing as N^2 while each rank keeps N/P
tokens.

Every point is planned first with `ringattn plan` (memory per rank, the
ring's predicted time: pred_ring_s and pred_wall_s in the CSV, dashed in the
time plot). Points whose planned memory or time exceed --max-memory-gb /
--max-seconds, or that cannot run, are skipped with the reason in the CSV; a run that fails is recorded as
failed with the reason, and the study goes on.

Needs Debian's Python (numpy, matplotlib; tomllib from Python 3.11).
"""

import argparse
import csv
import datetime
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402

# PDF with TrueType (Type 42) fonts, as journals ask (not Type 3); SVG text
# kept as text, editable and searchable.
matplotlib.rcParams["pdf.fonttype"] = 42
matplotlib.rcParams["svg.fonttype"] = "none"

REPO = Path(__file__).resolve().parents[2]

CSV_FIELDS = [
    "mode", "ranks", "n", "d", "heads", "causal", "wall_s", "gflops", "gflops_per_rank",
    "efficiency", "compute_s", "comm_wait_s", "io_s", "peak_rss_mb", "status", "reason",
    # extras: the weak-scaling length per rank, the efficiency baseline, threads,
    # total attention flops, the estimates used to decide skips, the run's files
    "batch", "n_per_rank", "baseline_ranks", "threads_per_rank", "flops", "compute_mean_s",
    "comm_wait_mean_s", "io_mean_s", "est_mem_gb", "est_seconds", "run_dir",
    # the ring model's predicted ring time (ringattn plan) and job wall time
    # (that plus I/O at IO_BYTES_PER_S), "" where it did not plan
    "pred_ring_s", "pred_wall_s",
    # the spread over --repeats (wall_s etc. are the kept, median run's): the runs
    # completed, their wall times (';'-separated, in run order), min and max
    "repeats", "wall_s_min", "wall_s_max", "wall_s_runs", "gflops_per_rank_min",
    "gflops_per_rank_max", "efficiency_min", "efficiency_max", "oversubscribed",
    # why the ranks of a point shared cores (their bindings overlapped), "" if not
    "shared_cores",
    # the context: where, what and when it ran (from the run's metrics where it ran)
    "host", "nodes", "cpu", "cpus", "vector_isa", "commit", "version", "mpi", "date",
]
# Columns read back as text (the rest are numbers, empty = none).
CSV_TEXT_FIELDS = {"mode", "status", "reason", "run_dir", "wall_s_runs", "host", "cpu",
                   "vector_isa", "commit", "version", "mpi", "date"}
PLOT_FORMATS = ("png", "pdf", "svg")

# Fixed memory of one rank besides its shards (MPI, HDF5, libxsmm, code): the
# README's measured peaks are shards + ring buffers + about 70 MB.
RANK_BASE_MB = 80.0
# Startup of one job (launcher, MPI_Init, opening files) in the time estimate.
JOB_OVERHEAD_S = 3.0
# Assumed parallel-file-system / local-disk bandwidth in the time estimate.
IO_BYTES_PER_S = 500e6


def log(msg):
    print(f"[scaling_study] {msg}", file=sys.stderr, flush=True)


def int_list(s):
    try:
        vals = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}")
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {s!r}")
    return vals


def format_list(s):
    vals = [x.strip().lower() for x in s.split(",") if x.strip()]
    bad = [v for v in vals if v not in PLOT_FORMATS]
    if not vals or bad:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(PLOT_FORMATS)}, got {s!r}")
    return list(dict.fromkeys(vals))


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter,
                        argparse.RawDescriptionHelpFormatter):
    """Shows defaults, except where the help states its own or there is none;
    the epilog as written."""

    def _get_help_string(self, action):
        h = action.help or ""
        if "[default" in h or action.default is None or isinstance(action.default, bool) \
                or action.default == "" or action.required:
            return h
        return super()._get_help_string(action)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Strong/weak scaling study of `ringattn run` (docs/scaling.md).",
        formatter_class=DefaultsFormatter, epilog=EPILOG)
    p.add_argument("--config", default=str(REPO / "configs" / "scaling.toml"),
                   help="TOML run configuration shared by every point")
    p.add_argument("--ranks", type=int_list, default=[1, 2, 4], help="rank counts, e.g. 1,2,4")
    p.add_argument("--lengths", type=int_list, default=[4096, 8192],
                   help="strong: total tokens N; weak: tokens per rank")
    p.add_argument("--mode", choices=["strong", "weak", "both"], default="both")
    p.add_argument("--d", type=int, default=64, help="head dim D")
    p.add_argument("--heads", type=int, default=4, help="query heads H (= key/value heads)")
    p.add_argument("--batch", type=int, default=1, help="batch B")
    p.add_argument("--dtype", choices=["f32", "f16"], default="f32", help="input element type")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated inputs")
    c = p.add_mutually_exclusive_group()
    c.add_argument("--causal", dest="causal", action="store_true", default=None,
                   help="causal masking [default: the config's attention.causal]")
    c.add_argument("--no-causal", dest="causal", action="store_false")
    p.add_argument("--threads-per-rank", type=int, default=1,
                   help="threads per rank (fixed across points so resources grow with ranks)")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs per point; the one with the median wall time is kept and "
                        "plotted, the error bars span the fastest to the slowest (3 or more "
                        "for a paper)")
    p.add_argument("--launcher", choices=["mpirun", "slurm"], default="mpirun")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--ringattn", default=None,
                   help="the ringattn binary [default: $RINGATTN, else build/ringattn]")
    p.add_argument("--mpiexec", default=os.environ.get("MPIEXEC", "mpirun"),
                   help="local launcher (mpirun mode) [default: $MPIEXEC or mpirun]")
    p.add_argument("--mpiexec-args", default="",
                   help="extra launcher arguments, one shell-split string "
                        "(--mpiexec-args='--bind-to core')")
    p.add_argument("--max-memory-gb", type=float, default=None,
                   help="skip points whose estimated memory exceeds this (mpirun: all ranks "
                        "on this machine; slurm: per node) [default mpirun: 80%% of MemAvailable; "
                        "slurm: no limit]")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="skip points whose estimated run time exceeds this [default: no limit]")
    p.add_argument("--gflops-per-rank", type=float, default=None,
                   help="attention GFLOP/s of one rank for the plan and the time estimate "
                        "[default: measured with `ringattn bench kernel`]")
    p.add_argument("--run-timeout", type=float, default=None,
                   help="kill a local run after this many seconds [default: none, or 4x the "
                        "estimate + 60 s when an estimate exists]")
    p.add_argument("--keep-outputs", action="store_true", help="keep each run's out.h5")
    p.add_argument("--plot-only", action="store_true",
                   help="redraw the plots from an existing DIR/results.csv, run nothing")
    p.add_argument("--plot-formats", type=format_list, default=["png", "pdf"],
                   metavar="LIST",
                   help="files written per plot, comma-separated from png, pdf, svg "
                        "[default: png,pdf]")
    p.add_argument("--dpi", type=int, default=200, help="resolution of the PNGs")
    p.add_argument("--no-caption", dest="caption", action="store_false",
                   help="leave the context line (CPU, commit, date, repeats) off the plots, "
                        "for a paper whose caption says it; the CSV keeps it")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (and write Slurm scripts), run nothing")
    s = p.add_argument_group("slurm launcher")
    s.add_argument("--ranks-per-node", type=int, default=None,
                   help="slurm: --ntasks-per-node (the memory limit applies per node)")
    s.add_argument("--partition", default=None, help="slurm: --partition")
    s.add_argument("--account", default=None, help="slurm: --account")
    s.add_argument("--time-limit", default=None,
                   help="slurm: --time for every job [default: from the estimate, at least 10 min]")
    s.add_argument("--exclusive", action="store_true", help="slurm: --exclusive nodes")
    s.add_argument("--srun-args", default="--mpi=pmix",
                   help="slurm: arguments of srun (--srun-args='--mpi=pmi2')")
    s.add_argument("--sbatch-args", default="", help="slurm: extra sbatch arguments")
    a = p.parse_args(argv)
    for name in ("d", "heads", "batch", "threads_per_rank", "repeats", "dpi"):
        if getattr(a, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if not 1 <= a.d <= 256:
        p.error("--d must be in 1..256")
    return a


EPILOG = """\
writes under --out DIR:
  results.csv          one row per point: the kept (median) run's figures, the
                       spread over --repeats (wall_s_min/max, wall_s_runs,
                       *_min/*_max), and the context: host, cpu, commit, date
  time_vs_ranks.*      job wall time vs ranks, log-log, with the ideal
  gflops_per_rank.*    attention GFLOP/s per rank vs ranks, with the baseline's
  efficiency.*         parallel efficiency vs ranks, axis from 0, ideal 1
  breakdown.*          compute / communication wait / I/O / other per point
  inputs/, runs/       the generated inputs; per point metrics.json, log.txt
each plot as png and pdf (--plot-formats), error bars min..max of the repeats,
ideal lines solid black and in the legend, a caption line with the context.

example (one machine, 3 runs per point):
  scaling_study.py --ranks 1,2,4 --lengths 4096,8192 --repeats 3 --out study/
"""


# ---- configuration, binary, machine ---------------------------------------------

def read_config(path):
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        sys.exit(f"scaling_study: cannot read config {path}: {e.strerror}")
    except tomllib.TOMLDecodeError as e:
        sys.exit(f"scaling_study: config {path} is not valid TOML: {e}")


def find_binary(arg):
    cands = [arg] if arg else []
    if os.environ.get("RINGATTN"):
        cands.append(os.environ["RINGATTN"])
    cands += [str(REPO / "build" / "ringattn"), "build/ringattn"]
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    sys.exit("scaling_study: no ringattn binary (tried: " + ", ".join(c for c in cands if c)
             + "); build it or set --ringattn / $RINGATTN")


def local_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def mem_available_gb():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def cpu_model():
    """The CPU's model name: /proc/cpuinfo (x86), else lscpu (Arm and the
    rest), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        r = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                           env=dict(os.environ, LC_ALL="C"))
        for line in r.stdout.splitlines():
            if line.startswith("Model name:"):
                return " ".join(line.split(":", 1)[1].split())
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine() or "unknown"


def repo_commit():
    """The driver's checkout: the commit a point gets before (or without) a
    run's metrics, which name the binary's own."""
    try:
        r = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
                           capture_output=True, text=True, timeout=10)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def now_iso():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def study_context(a):
    """What every row carries before a run's metrics say better: under mpirun
    this machine is where the ranks run; under Slurm the login node is not, so
    host and CPU come from the job (runs/<id>/context.txt)."""
    local = a.launcher == "mpirun"
    return {"host": socket.gethostname() if local else "", "nodes": 1 if local else None,
            "cpu": cpu_model() if local else "", "cpus": local_cpus() if local else None,
            "commit": repo_commit(), "version": "", "mpi": "", "vector_isa": ""}


def job_context(rdir):
    """cpu= and cpus= lines the Slurm job wrote on its first node."""
    ctx = {}
    try:
        for line in (rdir / "context.txt").read_text(errors="replace").splitlines():
            k, _, v = line.partition("=")
            if k == "cpu" and v.strip():
                ctx["cpu"] = " ".join(v.split())
            elif k == "cpus" and v.strip().isdigit():
                ctx["cpus"] = int(v)
    except OSError:
        pass
    return ctx


# ---- points and estimates -------------------------------------------------------

def make_points(a, causal):
    pts = []
    modes = ["strong", "weak"] if a.mode == "both" else [a.mode]
    for mode in modes:
        for length in a.lengths:
            for p in a.ranks:
                n = length if mode == "strong" else length * p
                pts.append({"mode": mode, "ranks": p, "n": n, "n_per_rank": n / p,
                            "length": length, "d": a.d, "heads": a.heads, "causal": causal})
    return pts


def attention_flops(n, d, heads, batch, causal):
    pairs = n * (n + 1) / 2 if causal else n * n
    return 4.0 * pairs * d * heads * batch


def plan_point(binary, pt, a, rate, kv_heads_per_chunk, ranks_here, cores):
    """The ring model's view of one point (`ringattn plan --json`): (memory
    GB of the ranks on one machine/node, predicted ring seconds, why it
    cannot run or ""), or None when the binary cannot plan (an older one).
    Memory is the planner's per-rank count (the kernel's and the ring's own)
    plus RANK_BASE_MB; ranks beyond `cores` share them in the prediction."""
    cmd = [binary, "plan", "--n", str(pt["n"]), "--d", str(pt["d"]), "--heads", str(pt["heads"]),
           "--batch", str(a.batch), "--kv-heads-per-chunk", str(max(kv_heads_per_chunk, 1)),
           "--ranks", str(pt["ranks"]), "--threads", str(a.threads_per_rank),
           "--ranks-per-node", str(ranks_here), "--cores-per-node", str(max(cores, 1)),
           "--rate", str(rate), "--memory-gb", "1e9", "--json"]
    if pt["causal"]:
        cmd.append("--causal")
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=child_env())
        row = json.loads(r.stdout.strip().splitlines()[-1])["rows"][0]
    except (subprocess.SubprocessError, ValueError, KeyError, IndexError, OSError):
        return None
    mem = (row["memory_bytes_per_rank"] + RANK_BASE_MB * 2**20) * ranks_here / 2**30
    return mem, row["predicted_s"], row["why"] if not row["fits"] else ""


def estimate_memory_gb(pt, a, kv_heads_per_chunk, ranks_here):
    """Peak memory of the ranks on one machine/node. Per rank and key/value
    head of a chunk, 9 shards of (N/P) x D x 4 bytes: q, k, v, the fp32
    accumulator that becomes o, the ring's double buffers for k and v, and
    one of headroom (f32 accounting, an upper bound for f16), plus a fixed
    base. This covers the README's measured peaks."""
    shard = math.ceil(pt["n"] / pt["ranks"]) * pt["d"] * 4.0
    kvh = min(max(kv_heads_per_chunk, 1), pt["heads"])
    per_rank = shard * kvh * (3 + 6) + RANK_BASE_MB * 2**20
    return per_rank * ranks_here / 2**30


def io_seconds(pt, a):
    """A job's reads and writes at IO_BYTES_PER_S."""
    io_bytes = 4.0 * pt["n"] * pt["d"] * pt["heads"] * a.batch * 4  # q, k, v read, o written
    return io_bytes / IO_BYTES_PER_S


def estimate_seconds(pt, a, rate_gflops_per_rank, oversub):
    if rate_gflops_per_rank is None:
        return None
    flops = attention_flops(pt["n"], pt["d"], pt["heads"], a.batch, pt["causal"])
    compute = flops / (pt["ranks"] * rate_gflops_per_rank * 1e9) * oversub
    return compute + io_seconds(pt, a) + JOB_OVERHEAD_S


def calibrate(binary, a, causal):
    """One rank's attention GFLOP/s with --threads-per-rank threads, from the
    kernel benchmark on a small seeded problem."""
    # 4096 tokens: a block of a step's size on small machines (the rate at
    # 1024 is a third lower, causal diagonal tiles being a larger share).
    cmd = [binary, "bench", "kernel", "--n", "4096", "--d", str(a.d), "--heads", "2",
           "--threads", str(a.threads_per_rank), "--reps", "3", "--json"]
    if causal:
        cmd.append("--causal")
    log("calibrating: " + shlex.join(cmd))
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=child_env())
        j = json.loads(r.stdout.strip().splitlines()[-1])
        g = float(j["gflops"])
        if g > 0:
            log(f"one rank: {g:.1f} GFLOP/s (kernel benchmark)")
            return g
    except (subprocess.SubprocessError, ValueError, KeyError, IndexError) as e:
        log(f"calibration failed ({e}); no time estimates")
    return None


# ---- running -----------------------------------------------------------------------

def child_env(threads=None):
    env = dict(os.environ)
    if os.geteuid() == 0:  # Open MPI refuses root unless told it is intended
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def input_path(out, pt, a):
    return out / "inputs" / (f"in_b{a.batch}_h{pt['heads']}_n{pt['n']}_d{pt['d']}"
                             f"_{a.dtype}_s{a.seed}.h5")


def gen_args(binary, path, pt, a):
    return [binary, "gen", "--output", str(path), "--batch", str(a.batch), "--heads",
            str(pt["heads"]), "--n", str(pt["n"]), "--d", str(pt["d"]), "--dtype", a.dtype,
            "--seed", str(a.seed)]


def ensure_input(binary, path, pt, a):
    """Generates the input once per shape (into a temporary name, renamed when
    complete, so an interrupted gen is not mistaken for a cached input)."""
    if path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    cmd = gen_args(binary, tmp, pt, a)
    log("gen: " + shlex.join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True, env=child_env())
    if r.returncode != 0:
        return f"ringattn gen exited {r.returncode}: {last_line(r.stderr or r.stdout)}"
    tmp.rename(path)
    return None


def last_line(text):
    """The line that says what went wrong: ringattn's own error line
    ("ringattn: io error: ..."), else the last line naming an error (CLI11
    usage errors, a launcher's complaint), else the last line."""
    lines = [l.strip() for l in (text or "").splitlines()
             if l.strip() and not l.startswith("$ ") and not l.startswith("---")]
    if not lines:
        return "(no output)"
    own = [l for l in lines if l.startswith("ringattn:") and "error" in l]
    other = [l for l in lines if any(w in l.lower() for w in
                                     ("error", "cannot", "not in range", "required", "failed",
                                      "not found", "no such", "killed", "signal"))]
    return (own or other or lines)[-1][:300]


def run_args(binary, a, cfg_path, inp, outp, metrics, causal):
    return [binary, "run", "--config", str(cfg_path), "--input", str(inp), "--output",
            str(outp), "--metrics", str(metrics), "--threads", str(a.threads_per_rank),
            "--overwrite", "--causal" if causal else "--no-causal"]


def run_local(binary, a, cfg_path, pt, inp, rdir, timeout):
    """One run under mpirun; returns (metrics dict or None, reason)."""
    metrics = rdir / "metrics.json"
    outp = rdir / "out.h5"
    if metrics.exists():
        metrics.unlink()
    cmd = [a.mpiexec, "-np", str(pt["ranks"])]
    if pt["ranks"] > local_cpus():
        cmd.append("--oversubscribe")
    cmd += shlex.split(a.mpiexec_args)
    cmd += run_args(binary, a, cfg_path, inp, outp, metrics, pt["causal"])
    log("run: " + shlex.join(cmd))
    with open(rdir / "log.txt", "a") as lf:
        lf.write("$ " + shlex.join(cmd) + "\n")
        lf.flush()
        try:
            # its own process group, so a timeout stops the launcher and its ranks
            proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT,
                                    env=child_env(a.threads_per_rank), start_new_session=True)
        except OSError as e:
            return None, f"cannot start {a.mpiexec}: {e.strerror}"
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(proc)
            rc = None
        except KeyboardInterrupt:
            stop_group(proc)
            raise
    if not a.keep_outputs and outp.exists():
        outp.unlink()
    if rc is None:
        return None, f"timed out after {timeout:.0f} s"
    if rc != 0:
        return None, f"exit {rc}: {last_line((rdir / 'log.txt').read_text(errors='replace'))}"
    return read_metrics(metrics)


def stop_group(proc):
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass


def read_metrics(path):
    try:
        with open(path) as f:
            return json.load(f), ""
    except (OSError, ValueError) as e:
        return None, f"no readable metrics ({e})"


def slurm_script(binary, a, cfg_path, pt, inp, rdir, est_s):
    p, t = pt["ranks"], a.threads_per_rank
    if a.time_limit:
        tl = a.time_limit
    else:
        # twice the estimate, plus writing the input when this job makes it
        gen_s = 0.0 if inp.exists() else 3 * pt["n"] * pt["d"] * pt["heads"] * a.batch * 4 / 100e6
        minutes = 10 if est_s is None else max(10, math.ceil((2 * est_s + gen_s + 300) / 60))
        tl = str(minutes)  # Slurm reads a bare number as minutes
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name=ringattn-{pt['mode'][0]}-p{p}-n{pt['n']}",
             f"#SBATCH --ntasks={p}",
             f"#SBATCH --cpus-per-task={t}",
             f"#SBATCH --time={tl}",
             f"#SBATCH --output={rdir}/slurm-%j.out"]
    if a.ranks_per_node:
        lines += [f"#SBATCH --nodes={math.ceil(p / a.ranks_per_node)}",
                  f"#SBATCH --ntasks-per-node={min(p, a.ranks_per_node)}"]
    if a.partition:
        lines.append(f"#SBATCH --partition={a.partition}")
    if a.account:
        lines.append(f"#SBATCH --account={a.account}")
    if a.exclusive:
        lines.append("#SBATCH --exclusive")
    metrics, outp = rdir / "metrics.json", rdir / "out.h5"
    tmp = inp.with_name(inp.name + ".tmp.${SLURM_JOB_ID}")
    gen = shlex.join(gen_args(binary, "@TMP@", pt, a)).replace("@TMP@", f'"{tmp}"')
    run = shlex.join(run_args(binary, a, cfg_path, inp, outp, metrics, pt["causal"]))
    ctxf = shlex.quote(str(rdir / "context.txt"))
    lines += ["set -euo pipefail",
              "# the context of the plots and the CSV: this node's CPU (not the login node's)",
              "{ echo \"cpu=$(LC_ALL=C lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p'"
              " | head -n 1)\"; echo \"cpus=$(nproc --all)\"; } > " + ctxf + " || true",
              # Each task bound to its own cores (--cpu-bind=cores on srun below):
              # without that, OMP_PROC_BIND pins every rank's threads to the
              # node's first cores (all ranks on core 0 at one thread each).
              f"export OMP_NUM_THREADS={t} OMP_PLACES=cores OMP_PROC_BIND=close",
              f"mkdir -p {shlex.quote(str(inp.parent))}",
              "# the input, once per shape (cached across jobs on the shared file system)",
              f"if [[ ! -f {shlex.quote(str(inp))} ]]; then",
              f"  {gen}",
              f"  mv \"{tmp}\" {shlex.quote(str(inp))}",
              "fi",
              f"srun {a.srun_args} --cpus-per-task={t} --cpu-bind=cores {run}"]
    if not a.keep_outputs:
        lines.append(f"rm -f {shlex.quote(str(outp))}")
    return "\n".join(lines) + "\n"


def run_slurm(a, script, rdir):
    if (rdir / "metrics.json").exists():  # never read a previous attempt's
        (rdir / "metrics.json").unlink()
    cmd = ["sbatch", "--wait", "--parsable"] + shlex.split(a.sbatch_args) + [str(script)]
    log("sbatch: " + shlex.join(cmd))
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=child_env())
    except OSError as e:
        return None, f"cannot run sbatch: {e.strerror}"
    with open(rdir / "log.txt", "a") as lf:
        lf.write("$ " + shlex.join(cmd) + "\n" + r.stdout + r.stderr)
    if r.returncode != 0:
        # the job's own log says more than sbatch: the newest slurm-<id>.out
        logs = sorted(rdir.glob("slurm-*.out"), key=lambda f: f.stat().st_mtime)
        why = last_line(logs[-1].read_text(errors="replace")) if logs else \
            last_line(r.stderr or r.stdout)
        return None, f"sbatch --wait exited {r.returncode}: {why}"
    return read_metrics(rdir / "metrics.json")


# ---- results -----------------------------------------------------------------------

def cpu_set(text):
    """A CPU list as the metrics write it ("0-3,8") as a set; None if absent."""
    if not text:
        return None
    cpus = set()
    for part in str(text).split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def shared_cores(m):
    """Where ranks on one host had fewer CPUs, together, than threads: the
    CPUs each rank's threads may run on (the metrics' "cpus") overlap and
    their union is smaller than ranks x threads there. A rank set bound to
    the same core (OMP_PROC_BIND without a binding launcher) is the case that
    made a study report efficiency 0.24 where the truth was 1.0. Returns a
    reason, or ""."""
    threads = (m.get("context") or {}).get("threads_per_rank") or 1
    by_host = {}
    for r in m.get("ranks", []):
        s = cpu_set(r.get("cpus"))
        if s is not None:
            by_host.setdefault(r.get("host", ""), []).append(s)
    for host, sets in by_host.items():
        union = set().union(*sets)
        overlap = sum(len(s) for s in sets) > len(union)
        if len(sets) > 1 and overlap and len(union) < len(sets) * threads:
            return (f"{len(sets)} ranks x {threads} threads on {host or 'one host'} could run "
                    f"on {len(union)} CPUs only (their bindings overlap)")
    return ""


def summarize(m):
    ranks = m.get("ranks", [])
    io = [r.get("io_read_s", 0.0) + r.get("io_write_s", 0.0) for r in ranks]
    return {
        "wall_s": m["wall_s"],
        "gflops": m["gflops"],
        "compute_s": max((r.get("compute_s", 0.0) for r in ranks), default=0.0),
        "comm_wait_s": max((r.get("comm_wait_s", 0.0) for r in ranks), default=0.0),
        "io_s": max(io, default=0.0),
        "peak_rss_mb": max((r.get("peak_rss_mb", 0.0) for r in ranks), default=0.0),
        "flops": sum(r.get("flops", 0.0) for r in ranks),
        # means over ranks: each rank's parts add up to at most its wall time,
        # so the means do too (the maxima may come from different ranks)
        "compute_mean_s": mean(r.get("compute_s", 0.0) for r in ranks),
        "comm_wait_mean_s": mean(r.get("comm_wait_s", 0.0) for r in ranks),
        "io_mean_s": mean(io),
        "shared_cores": shared_cores(m),
        **metrics_context(m),
    }


def metrics_context(m):
    """The context the run's metrics record (what ran, where)."""
    c = m.get("context") or {}
    hosts = c.get("hosts") or sorted({r["host"] for r in m.get("ranks", []) if r.get("host")})
    out = {}
    if hosts:
        out["host"] = hosts[0] if len(hosts) == 1 else f"{hosts[0]} +{len(hosts) - 1}"
        out["nodes"] = len(hosts)
    for src, dst in (("git_commit", "commit"), ("version", "version"), ("mpi", "mpi"),
                     ("vector_isa", "vector_isa")):
        if c.get(src):
            out[dst] = str(c[src])
    return out


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def add_efficiency(rows):
    """Per series (mode, length): efficiency against the completed point with
    the fewest ranks, as per-rank attention throughput (see the module doc)."""
    series = {}
    for r in rows:
        series.setdefault((r["mode"], r["length"]), []).append(r)
    for rs in series.values():
        ok = [r for r in rs if r["status"] == "ok" and r["wall_s"] > 0 and r["flops"] > 0]
        if not ok:
            continue
        b = min(ok, key=lambda r: r["ranks"])
        base = b["flops"] / b["wall_s"] / b["ranks"]
        for r in ok:
            r["baseline_ranks"] = b["ranks"]
            r["efficiency"] = (r["flops"] / r["wall_s"] / r["ranks"]) / base
            # the point's own spread, the baseline held at its kept run (the
            # flops of a point are the same in every repeat)
            if r.get("wall_s_min") and r.get("wall_s_max"):
                r["efficiency_max"] = r["efficiency"] * r["wall_s"] / r["wall_s_min"]
                r["efficiency_min"] = r["efficiency"] * r["wall_s"] / r["wall_s_max"]


def fmt(v):
    if v is None or v == "":
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def write_csv(path, rows):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: fmt(r.get(k)) for k in CSV_FIELDS})
    tmp.replace(path)


def read_csv(path):
    """Rows of a results.csv as the driver holds them (numbers as numbers)."""
    try:
        with open(path, newline="") as f:
            raw = list(csv.DictReader(f))
    except OSError as e:
        sys.exit(f"scaling_study: cannot read {path}: {e.strerror}")
    rows = []
    for r in raw:
        row = {}
        for k, v in r.items():
            if k is None:  # a row longer than the header
                continue
            if k in CSV_TEXT_FIELDS:
                row[k] = v or ""
            elif k in ("causal", "oversubscribed"):
                row[k] = v == "true"
            elif v is None or v == "":
                row[k] = None
            else:
                try:
                    row[k] = float(v)
                except ValueError:
                    row[k] = None
        for k in ("ranks", "n", "d", "heads"):
            row[k] = int(row[k])
        row["length"] = row["n"] if row["mode"] == "strong" else row["n"] // row["ranks"]
        rows.append(row)
    return rows


# ---- plots -------------------------------------------------------------------------

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "*"]
IDEAL_STYLE = dict(color="black", lw=1.4, ls="-", zorder=1.5)


def series_label(mode, length):
    return f"N = {length}" if mode == "strong" else f"N/P = {length}"


def ok_series(rows, mode):
    out = {}
    for r in rows:
        if r["mode"] == mode and r["status"] == "ok" and r.get("wall_s"):
            out.setdefault(r["length"], []).append(r)
    return {k: sorted(v, key=lambda r: r["ranks"]) for k, v in sorted(out.items())}


def modes_of(rows):
    ms = [m for m in ("strong", "weak") if any(r["mode"] == m for r in rows)]
    return ms or ["strong"]


def no_data(ax):
    ax.text(0.5, 0.5, "no completed points", ha="center", va="center", transform=ax.transAxes)


def ranks_axis(ax, ranks):
    """Log 2 axis with a tick and a plain label at each rank count, no minor
    ticks, and room either side for the markers and error bar caps."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(ticker.FixedLocator(ranks))
    ax.xaxis.set_major_formatter(ticker.FixedFormatter([str(r) for r in ranks]))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlim(min(ranks) / 1.3, max(ranks) * 1.3)
    ax.set_xlabel("ranks P")


def nice_num(v):
    return f"{v:.12g}"


def log_ticks(lo, hi):
    """Major ticks for a log axis over [lo, hi]: powers of 10, else 1-2-5,
    else 1..9 per decade, the sparsest set with at least 3 ticks in view
    (each labelled plainly: 0.05, 0.1, 0.2, not 5x10^-2)."""
    ticks = []
    for subs in ((1,), (1, 2, 5), (1, 2, 3, 5, 7), (1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = []
        for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
            for s in subs:
                v = float(f"{s * 10.0 ** k:.12g}")
                if lo <= v <= hi:
                    ticks.append(v)
        if len(ticks) >= 3:
            break
    return ticks


def clean_log_y(ax):
    ax.set_yscale("log")
    ax.autoscale_view()
    lo, hi = ax.get_ylim()
    # half a tick step of margin each side, so no line sits on the frame
    f = (hi / lo) ** 0.06
    lo, hi = lo / f, hi * f
    ax.set_ylim(lo, hi)
    ax.yaxis.set_major_locator(ticker.FixedLocator(log_ticks(lo, hi)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: nice_num(v)))
    ax.yaxis.set_minor_locator(ticker.LogLocator(base=10, subs=range(2, 10), numticks=100))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def spread(rs, key):
    """(lower, upper) error bar lengths from key_min/key_max, or None when no
    point has a spread (one run each, or a CSV from an older driver)."""
    lo = [r.get(f"{key}_min") for r in rs]
    hi = [r.get(f"{key}_max") for r in rs]
    if any(v is None for v in lo + hi):
        return None
    ys = [r[key] for r in rs]
    err = [[max(0.0, y - l) for y, l in zip(ys, lo)], [max(0.0, h - y) for y, h in zip(ys, hi)]]
    return err if any(e > 0 for e in err[0] + err[1]) else None


def repeats_of(rows):
    reps = sorted({int(r["repeats"]) for r in rows
                   if r["status"] == "ok" and r.get("repeats") is not None})
    return reps


def oversubscribed(r):
    """Time sharing, not scaling: more threads than CPUs, or ranks bound
    to the same cores."""
    return bool(r.get("oversubscribed")) or bool(r.get("shared_cores"))


def plot_lines(rows, ykey, ylabel, title, ideal, ideal_label, kind, predicted=None):
    """One panel per mode: a series per length with min..max error bars, the
    ideal in solid black, oversubscribed points ringed, and where given
    `predicted` (a function of a series' rows, None where a row has no
    prediction) dashed in the series' colour. kind: "log" (log y with clean
    ticks), "zero" (linear from 0) or "efficiency" (0 to a little above 1)."""
    ms = modes_of(rows)
    ranks = sorted({r["ranks"] for r in rows}) or [1]
    fig, axes = plt.subplots(1, len(ms), figsize=(6.4 * len(ms), 4.6), squeeze=False)
    for ax, mode in zip(axes[0], ms):
        ser = ok_series(rows, mode)
        top = 0.0
        ideal_done = False
        for i, (length, rs) in enumerate(ser.items()):
            col, mk = f"C{i % 10}", MARKERS[i % len(MARKERS)]
            xs = [r["ranks"] for r in rs]
            ys = [r[ykey] for r in rs]
            err = spread(rs, ykey)
            if err:
                ax.errorbar(xs, ys, yerr=err, fmt=mk + "-", color=col, ms=6, lw=1.6, capsize=4,
                            elinewidth=1.2, capthick=1.2, zorder=3,
                            label=series_label(mode, length))
            else:  # one run per point (or an older CSV): no bars, no bar in the legend
                ax.plot(xs, ys, mk + "-", color=col, ms=6, lw=1.6, zorder=3,
                        label=series_label(mode, length))
            top = max([top] + ys + ([y + e for y, e in zip(ys, err[1])] if err else []))
            if predicted is not None:
                pts = [(x, y) for x, y in zip(xs, predicted(rs)) if y is not None]
                if pts:
                    ax.plot([x for x, _ in pts], [y for _, y in pts], "--", color=col, lw=1.2,
                            zorder=2, label=f"{series_label(mode, length)}: predicted "
                                            "(ringattn plan)")
                    top = max([top] + [y for _, y in pts])
            if ideal is not None and ideal != "one":
                yi = ideal(rs)
                ax.plot(xs, yi, **IDEAL_STYLE,
                        label=ideal_label[mode] if not ideal_done else "_nolegend_")
                ideal_done = True
                top = max([top] + yi)
        if ideal == "one" and ser:
            ax.axhline(1.0, **IDEAL_STYLE, label=ideal_label[mode])
        over = [r for rs in ser.values() for r in rs if oversubscribed(r)]
        if over:
            ax.scatter([r["ranks"] for r in over], [r[ykey] for r in over], s=190,
                       facecolors="none", edgecolors="0.35", linewidths=1.2, zorder=4,
                       label="time sharing (threads > CPUs, or ranks on the same cores)")
        if not ser:
            no_data(ax)
        ranks_axis(ax, ranks)
        ax.grid(True, which="major", alpha=0.3)
        if ser and kind == "log":
            clean_log_y(ax)
        elif kind == "zero":
            ax.set_ylim(0, top * 1.12 if top > 0 else 1)
        elif kind == "efficiency":
            hi = max(1.1, top * 1.05)
            ax.set_ylim(0, hi)
            if hi <= 2.2:
                ax.yaxis.set_major_locator(ticker.MultipleLocator(0.2))
                ax.yaxis.set_minor_locator(ticker.MultipleLocator(0.1))
        ax.set_ylabel(ylabel)
        what = "fixed total N" if mode == "strong" else "fixed N per rank"
        ax.set_title(f"{mode} scaling ({what})")
        if ser:
            # the series first, then the ideal, then the oversubscribed ring
            hs, ls = ax.get_legend_handles_labels()
            order = sorted(range(len(ls)), key=lambda k: (ls[k].startswith("oversub"),
                                                          ls[k].startswith("ideal")))
            ax.legend([hs[k] for k in order], [ls[k] for k in order], fontsize=8, loc="best",
                      framealpha=0.9)
    fig.suptitle(title)
    return fig


def ideal_time(rs):
    b = rs[0]
    # ideal: the baseline's per-rank throughput held at every P
    return [b["wall_s"] * (r["flops"] / b["flops"]) * (b["ranks"] / r["ranks"]) for r in rs]


def predicted_time(rs):
    """The ring model's job wall time where the point was planned."""
    return [r.get("pred_wall_s") for r in rs]


def ideal_gflops(rs):
    return [rs[0]["gflops_per_rank"]] * len(rs)


def plot_breakdown(rows, title):
    ms = modes_of(rows)
    n_max = max([len([r for r in rows if r["mode"] == m]) for m in ms] + [1])
    width = max(7.0, 0.8 * n_max + 3)
    fig, axes = plt.subplots(len(ms), 1, figsize=(width, 4.2 * len(ms)), squeeze=False)
    parts = [("compute_mean_s", "compute", "C0"), ("comm_wait_mean_s", "communication wait", "C3"),
             ("io_mean_s", "I/O (incl. waiting in collective I/O)", "C2"),
             ("other_s", "other", "0.75")]
    for ax, mode in zip(axes[:, 0], ms):
        rs = [r for r in rows if r["mode"] == mode and r["status"] == "ok" and r.get("wall_s")]
        rs.sort(key=lambda r: (r["length"], r["ranks"]))
        if not rs:
            no_data(ax)
            ax.set_title(f"{mode} scaling: time breakdown")
            continue
        x = list(range(len(rs)))
        bottom = [0.0] * len(rs)
        for key, label, col in parts:
            vals = []
            for r in rs:
                if key == "other_s":
                    v = max(0.0, r["wall_s"] - sum(
                        r.get(k) if r.get(k) is not None else r[k.replace("_mean", "")]
                        for k in ("compute_mean_s", "comm_wait_mean_s", "io_mean_s")))
                else:  # a results.csv of an older driver has only the maxima
                    v = r.get(key)
                    if v is None:
                        v = r[key.replace("_mean", "")]
                vals.append(100.0 * v / r["wall_s"] if r["wall_s"] > 0 else 0.0)
            ax.bar(x, vals, bottom=bottom, color=col, label=label, width=0.7)
            bottom = [b + v for b, v in zip(bottom, vals)]
        for xi, r, top in zip(x, rs, bottom):
            txt = f"{r['wall_s']:.3g} s"
            if r.get("wall_s_min") is not None and r.get("wall_s_max") is not None \
                    and r["wall_s_max"] > r["wall_s_min"]:
                txt += f"\n{r['wall_s_min']:.3g}–{r['wall_s_max']:.3g}"
            ax.text(xi, top + 1, txt, ha="center", va="bottom", fontsize=7, linespacing=1.1)
        ax.set_xticks(x)
        ax.set_xticklabels([f"P={r['ranks']}{'*' if oversubscribed(r) else ''}\nN={r['n']}"
                            for r in rs], fontsize=8)
        ax.set_xlim(-0.6, len(rs) - 0.4)
        ax.set_ylabel("% of job wall time (mean over ranks)")
        ax.set_ylim(0, max(100.0, max(bottom)) * 1.25)
        ax.set_yticks([0, 20, 40, 60, 80, 100])
        what = "fixed total N" if mode == "strong" else "fixed N per rank"
        note = "labels: kept run's wall time"
        if any(r.get("wall_s_max") and r["wall_s_max"] > (r.get("wall_s_min") or 0) for r in rs):
            note += ", min–max of the repeats"
        if any(oversubscribed(r) for r in rs):
            note += "; *: oversubscribed"
        ax.set_title(f"{mode} scaling ({what}): where the time goes\n({note})", fontsize=10)
        ax.legend(fontsize=8, loc="upper center", ncol=4, frameon=False,
                  bbox_to_anchor=(0.5, 1.0))
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title)
    return fig


def uniform(rows, key, default=None):
    vals = {r.get(key) for r in rows if r.get(key) not in (None, "")}
    return vals.pop() if len(vals) == 1 else (default if not vals else "mixed")


def context_caption(rows):
    """One line of context for every plot, from the rows plotted (the CSV's,
    under --plot-only): CPU, host, ranks' threads, build, MPI, dates, repeats."""
    ok = [r for r in rows if r["status"] == "ok"] or rows
    parts = []
    cpu = uniform(ok, "cpu")
    if cpu:
        cpus = uniform(ok, "cpus")
        isa = uniform(ok, "vector_isa")
        extra = ", ".join(x for x in (f"{fmt(cpus)} CPUs" if cpus not in (None, "mixed")
                                      else "", isa or "") if x)
        parts.append(f"CPU {cpu}" + (f" ({extra})" if extra else ""))
    hosts = sorted({r["host"] for r in ok if r.get("host")})
    if hosts:
        nodes = max(int(r["nodes"]) for r in ok if r.get("nodes") is not None) \
            if any(r.get("nodes") is not None for r in ok) else 1
        parts.append(("host " + ", ".join(hosts[:3]) + (" ..." if len(hosts) > 3 else ""))
                     + (f", up to {nodes} nodes" if nodes > 1 else ""))
    version, commit = uniform(ok, "version"), uniform(ok, "commit")
    if version or commit:
        parts.append("ringattn " + " ".join(x for x in (version, f"commit {commit}"
                                                        if commit else "") if x))
    mpi = uniform(ok, "mpi")
    if mpi:
        parts.append(mpi)
    days = sorted({r["date"][:10] for r in ok if r.get("date")})
    if days:
        parts.append(days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}")
    reps = repeats_of(rows)
    if reps:
        r = f"{reps[0]}" if len(reps) == 1 else f"{reps[0]}-{reps[-1]}"
        parts.append("1 run per point" if reps == [1] else
                     f"{r} runs per point: markers the median, bars min–max")
    return " · ".join(parts)


def add_caption(fig, text, width_in):
    """The context under the plot, wrapped to the figure's width; the
    layout leaves it room."""
    if text:
        # break between the " · " parts, within a part only if it alone is too long
        width = max(60, int(width_in * 17))
        out = []
        for part in text.split(" · "):
            if out and len(out[-1]) + 3 + len(part) <= width:
                out[-1] += " · " + part
            else:
                out += textwrap.wrap(part, width=width) or [""]
        wrapped = "\n".join(out)
        lines = len(out)
        fig.text(0.01, 0.01, wrapped, ha="left", va="bottom", fontsize=7, color="0.25")
        h = fig.get_size_inches()[1]
        fig.tight_layout(rect=(0, (0.06 + 0.14 * lines) / h + 0.01, 1, 1))
    else:
        fig.tight_layout()


def save(fig, out, stem, title, caption, a):
    paths = []
    for ext in a.plot_formats:
        meta = {"png": {"Title": title, "Description": caption, "Software": "scaling_study.py"},
                "pdf": {"Title": title, "Subject": caption, "Creator": "scaling_study.py"},
                "svg": {"Title": title, "Description": caption, "Creator": "scaling_study.py"},
                }[ext]
        path = out / f"{stem}.{ext}"
        fig.savefig(path, dpi=a.dpi, metadata=meta)
        paths.append(path)
    plt.close(fig)
    return paths


def make_plots(rows, out, causal, a):
    def one(key, default):
        v = uniform(rows, key, default)
        return v

    d, h, b = one("d", a.d), one("heads", a.heads), one("batch", a.batch)
    c, t = one("causal", causal), one("threads_per_rank", a.threads_per_rank)
    c = c if c == "mixed" else ("causal" if c else "non-causal")
    shape = f"D = {fmt(d)}, H = {fmt(h)}, B = {fmt(b)}, {c}, {fmt(t)} thread(s)/rank"
    caption = context_caption(rows)
    shown = caption if a.caption else ""
    ideal_t = {"strong": "ideal: T_b · P_b / P", "weak": "ideal: T_b · (work_P / work_b) · P_b / P"}
    ideal_g = {m: "ideal: the baseline's rate" for m in ("strong", "weak")}
    ideal_e = {m: "ideal: 1" for m in ("strong", "weak")}
    written = []
    for stem, key, ylabel, title, ideal, labels, kind, pred in (
            ("time_vs_ranks", "wall_s", "job wall time [s]", f"Time vs ranks ({shape})",
             ideal_time, ideal_t, "log", predicted_time),
            ("gflops_per_rank", "gflops_per_rank", "attention GFLOP/s per rank (flops / wall / P)",
             f"Throughput per rank ({shape})", ideal_gflops, ideal_g, "zero", None),
            ("efficiency", "efficiency", "efficiency (per-rank throughput / baseline's)",
             f"Parallel efficiency ({shape})", "one", ideal_e, "efficiency", None)):
        fig = plot_lines(rows, key, ylabel, title, ideal, labels, kind, pred)
        add_caption(fig, shown, fig.get_size_inches()[0])
        written += save(fig, out, stem, title, caption, a)
    title = f"Time breakdown ({shape})"
    fig = plot_breakdown(rows, title)
    add_caption(fig, shown, fig.get_size_inches()[0])
    written += save(fig, out, "breakdown", title, caption, a)
    return written


# ---- main --------------------------------------------------------------------------

def main(argv=None):
    a = parse_args(argv)
    cfg_path = Path(a.config).resolve()
    cfg = read_config(cfg_path)
    causal = a.causal
    if causal is None:
        causal = bool(cfg.get("attention", {}).get("causal", False))
    kvhpc = int(cfg.get("run", {}).get("kv_heads_per_chunk", 1) or 1)
    out = Path(a.out).resolve()
    if a.plot_only:
        rows = read_csv(out / "results.csv")
        files = make_plots(rows, out, causal, a)
        log(f"plots redrawn from {out / 'results.csv'} ({len(rows)} rows): "
            + " ".join(f.name for f in files))
        return 0
    binary = find_binary(a.ringattn)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    if a.launcher == "mpirun" and not a.dry_run and shutil.which(a.mpiexec) is None:
        sys.exit(f"scaling_study: launcher {a.mpiexec!r} not found (set --mpiexec)")
    if a.launcher == "slurm" and not a.dry_run and shutil.which("sbatch") is None:
        sys.exit("scaling_study: sbatch not found (the slurm launcher runs on a Slurm login node)")

    max_mem = a.max_memory_gb
    if max_mem is None and a.launcher == "mpirun":
        avail = mem_available_gb()
        max_mem = 0.8 * avail if avail else None
    rate = a.gflops_per_rank
    if rate is None:  # the planner's kernel rate, and the time limit's
        rate = calibrate(binary, a, causal)
    cpus = local_cpus()
    log(f"binary {binary}; config {cfg_path}; causal {causal}; out {out}; "
        f"memory limit {'none' if max_mem is None else f'{max_mem:.1f} GB'}; "
        f"time limit {'none' if a.max_seconds is None else f'{a.max_seconds:.0f} s'}")

    ctx = study_context(a)
    points = make_points(a, causal)
    gen_failed = {}  # input path -> why gen failed ("" when it did not)
    done = {}  # (ranks, n) -> (status, reason, summary, run_dir): one run serves both modes
    rows = []
    t_start = time.time()
    for pt in points:
        p = pt["ranks"]
        if a.launcher == "mpirun":
            here = p
        else:
            here = min(p, a.ranks_per_node) if a.ranks_per_node else p
        oversub = max(1.0, p * a.threads_per_rank / cpus) if a.launcher == "mpirun" else 1.0
        # The planner's memory and time where it can; the driver's own
        # estimates otherwise (an older binary, or no rate).
        planned = None
        if rate is not None:
            cores = cpus if a.launcher == "mpirun" else here * a.threads_per_rank
            planned = plan_point(binary, pt, a, rate, kvhpc, here, cores)
        if planned is not None:
            mem, pred, cannot = planned
            est = pred + io_seconds(pt, a) + JOB_OVERHEAD_S
        else:
            mem, pred, cannot = estimate_memory_gb(pt, a, kvhpc, here), None, ""
            est = estimate_seconds(pt, a, rate, oversub)
        row = dict(pt, batch=a.batch, threads_per_rank=a.threads_per_rank, est_mem_gb=mem,
                   est_seconds=est, pred_ring_s=pred,
                   pred_wall_s=None if pred is None else pred + io_seconds(pt, a),
                   wall_s=None, efficiency=None, baseline_ranks=None, **ctx)
        row["date"] = now_iso()
        # ranks x threads beyond this machine's CPUs: time sharing, not scaling
        # (Slurm allocates --cpus-per-task for each rank)
        row["oversubscribed"] = a.launcher == "mpirun" and p * a.threads_per_rank > cpus
        key = (p, pt["n"])
        rid = f"p{p}_n{pt['n']}"
        rdir = out / "runs" / rid
        row["run_dir"] = os.path.relpath(rdir, out)
        reason = ""
        if pt["n"] < p:
            reason = f"N = {pt['n']} < P = {p} tokens"
        elif cannot:
            reason = f"ringattn plan: {cannot}"
        elif max_mem is not None and mem > max_mem:
            reason = f"estimated memory {mem:.2f} GB > limit {max_mem:.2f} GB"
        elif a.max_seconds is not None and est is not None and est > a.max_seconds:
            reason = f"estimated time {est:.0f} s > limit {a.max_seconds:.0f} s"
        if reason:
            row.update(status="skipped", reason=reason)
            log(f"skip {pt['mode']} P={p} N={pt['n']}: {reason}")
            rows.append(row)
            continue
        if a.dry_run:
            if a.launcher == "slurm":
                rdir.mkdir(parents=True, exist_ok=True)
                sp = rdir / "job.sbatch"
                inp = input_path(out, pt, a)
                sp.write_text(slurm_script(binary, a, cfg_path, pt, inp, rdir, est))
                log(f"plan {pt['mode']} P={p} N={pt['n']}: {sp}")
            else:
                log(f"plan {pt['mode']} P={p} N={pt['n']}: est {mem:.2f} GB"
                    + (f", {est:.1f} s" if est is not None else ""))
            row.update(status="skipped", reason="dry run")
            rows.append(row)
            continue
        if key not in done:
            rdir.mkdir(parents=True, exist_ok=True)
            inp = input_path(out, pt, a)
            results = []
            m, err = None, ""
            if a.launcher == "mpirun":
                if inp not in gen_failed:
                    gen_failed[inp] = ensure_input(binary, inp, pt, a) or ""
                err = gen_failed[inp]
            timeout = a.run_timeout
            if timeout is None and est is not None:
                timeout = 4 * est + 60
            started = now_iso()
            for rep in range(a.repeats if not err else 0):
                if a.launcher == "mpirun":
                    m, err = run_local(binary, a, cfg_path, pt, inp, rdir, timeout)
                else:
                    sp = rdir / "job.sbatch"
                    sp.write_text(slurm_script(binary, a, cfg_path, pt, inp, rdir, est))
                    m, err = run_slurm(a, sp, rdir)
                if m is None:
                    break
                s = summarize(m)
                s["rep"] = rep
                results.append(s)
                if a.repeats > 1:
                    os.replace(rdir / "metrics.json", rdir / f"metrics.{rep}.json")
            if m is not None and results:
                walls = [r["wall_s"] for r in results]  # in run order
                rates = [r["gflops"] for r in results]
                results.sort(key=lambda s: s["wall_s"])
                med = dict(results[(len(results) - 1) // 2])
                if a.repeats > 1:  # metrics.json: the kept (median) run's
                    shutil.copyfile(rdir / f"metrics.{med['rep']}.json", rdir / "metrics.json")
                med.update(repeats=len(results), wall_s_min=min(walls), wall_s_max=max(walls),
                           wall_s_runs=";".join(f"{w:.6g}" for w in walls),
                           gflops_min=min(rates), gflops_max=max(rates), date=started)
                if a.launcher == "slurm":
                    med.update(job_context(rdir))
                done[key] = ("ok", "", med)
                med["shared_cores"] = next((r["shared_cores"] for r in results
                                            if r["shared_cores"]), "")
                log(f"ok P={p} N={pt['n']}: {med['wall_s']:.3f} s, {med['gflops']:.2f} GFLOP/s")
                if med["shared_cores"]:
                    log(f"WARNING P={p} N={pt['n']}: ranks shared cores: {med['shared_cores']}; "
                        "the point is marked (time sharing, not scaling): bind the ranks "
                        "(mpirun --bind-to core, srun --cpu-bind=cores)")
            else:
                done[key] = ("failed", err, None)
                log(f"FAILED P={p} N={pt['n']}: {err}")
        status, reason, s = done[key]
        row.update(status=status, reason=reason)
        if s:
            row.update(s)
            row["gflops_per_rank"] = s["gflops"] / p
            row["gflops_per_rank_min"] = s["gflops_min"] / p
            row["gflops_per_rank_max"] = s["gflops_max"] / p
        rows.append(row)
        add_efficiency(rows)
        write_csv(out / "results.csv", rows)  # partial results survive an interrupted study

    add_efficiency(rows)
    write_csv(out / "results.csv", rows)
    if not a.dry_run:
        files = make_plots(rows, out, causal, a)
        log(f"plots: {' '.join(f.name for f in files)} in {out}")
    n_ok = sum(r["status"] == "ok" for r in rows)
    n_failed = sum(r["status"] == "failed" for r in rows)
    log(f"{len(rows)} points: {n_ok} ok, {len(rows) - n_ok - n_failed} skipped, {n_failed} failed "
        f"in {time.time() - t_start:.1f} s; results in {out / 'results.csv'}")
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
