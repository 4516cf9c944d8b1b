#!/usr/bin/python3
"""ctest: launch/scaling_study/scaling_study.py on a tiny sweep.

    test_scaling_study.py RINGATTN_BINARY MPIEXEC [SCRATCH_DIR]

Runs ranks 1,2 x lengths 512,1024, D 32, H 2, mode both under mpirun and
checks that results.csv has one row per point, all ok with positive times and
efficiencies, and that every plot is a valid, non-trivial PNG. Then a second,
run-free sweep checks that a point over --max-memory-gb is skipped with a
reason, not failed.
"""

import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
DRIVER = HERE.parents[1] / "launch" / "scaling_study" / "scaling_study.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ["time_vs_ranks.png", "gflops_per_rank.png", "efficiency.png", "breakdown.png"]

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print(f"FAIL: {msg}", file=sys.stderr)


def driver(args, cwd):
    cmd = ["/usr/bin/python3", str(DRIVER)] + args
    print("$ " + " ".join(cmd), flush=True)
    t = time.time()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    print(r.stdout + r.stderr, flush=True)
    print(f"(driver: exit {r.returncode}, {time.time() - t:.1f} s)", flush=True)
    return r.returncode


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_png(path):
    if not path.is_file():
        check(False, f"{path.name} missing")
        return
    data = path.read_bytes()
    check(data[:8] == PNG_SIGNATURE, f"{path.name}: not a PNG (signature {data[:8]!r})")
    check(len(data) > 5000, f"{path.name}: only {len(data)} bytes")
    img = mpimg.imread(str(path))
    check(img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300,
          f"{path.name}: image shape {img.shape}")
    flat = img.reshape(-1, img.shape[-1])
    colours = np.unique(np.round(flat[:, :3] * 255).astype(np.uint8), axis=0)
    check(len(colours) > 10, f"{path.name}: only {len(colours)} colours")
    # something drawn besides the white background
    non_white = float(np.mean(np.any(flat[:, :3] < 0.9, axis=1)))
    check(non_white > 0.01, f"{path.name}: {non_white:.3%} of pixels are not white")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    binary, mpiexec = os.path.abspath(sys.argv[1]), sys.argv[2]
    scratch = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(tempfile.mkdtemp(prefix="scal-"))
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    out = scratch / "study"
    t0 = time.time()

    # (1) the tiny sweep: 2 ranks x 2 lengths x 2 modes = 8 points
    rc = driver(["--ringattn", binary, "--mpiexec", mpiexec, "--launcher", "mpirun",
                 "--ranks", "1,2", "--lengths", "512,1024", "--d", "32", "--heads", "2",
                 "--mode", "both", "--causal", "--threads-per-rank", "1", "--out", str(out)],
                cwd=scratch)
    check(rc == 0, f"driver exited {rc}")
    csv_path = out / "results.csv"
    check(csv_path.is_file(), "results.csv missing")
    if csv_path.is_file():
        rows = read_rows(csv_path)
        for col in ["mode", "ranks", "n", "d", "heads", "causal", "wall_s", "gflops",
                    "gflops_per_rank", "efficiency", "compute_s", "comm_wait_s", "io_s",
                    "peak_rss_mb", "status", "reason"]:
            check(rows and col in rows[0], f"results.csv lacks column {col}")
        got = sorted((r["mode"], int(r["ranks"]), int(r["n"])) for r in rows)
        want = sorted([("strong", p, n) for p in (1, 2) for n in (512, 1024)]
                      + [("weak", p, n * p) for p in (1, 2) for n in (512, 1024)])
        check(got == want, f"points {got} != {want}")
        for r in rows:
            where = f"{r['mode']} P={r['ranks']} N={r['n']}"
            check(r["status"] == "ok", f"{where}: status {r['status']} ({r['reason']})")
            if r["status"] != "ok":
                continue
            check(r["d"] == "32" and r["heads"] == "2" and r["causal"] == "true",
                  f"{where}: shape/causal {r['d']}, {r['heads']}, {r['causal']}")
            for col in ["wall_s", "gflops", "gflops_per_rank", "efficiency", "compute_s",
                        "peak_rss_mb"]:
                check(float(r[col] or 0) > 0, f"{where}: {col} = {r[col]!r}")
            check(float(r["comm_wait_s"]) >= 0 and float(r["io_s"]) >= 0,
                  f"{where}: negative comm/io time")
            check(abs(float(r["gflops_per_rank"]) * int(r["ranks"]) - float(r["gflops"]))
                  <= 1e-3 * float(r["gflops"]), f"{where}: gflops_per_rank != gflops / P")
            if r["ranks"] == "1":
                check(abs(float(r["efficiency"]) - 1) < 1e-9, f"{where}: baseline efficiency "
                      f"{r['efficiency']}")
            check(float(r["efficiency"]) < 20, f"{where}: efficiency {r['efficiency']}")
        check((out / "runs" / "p2_n2048" / "metrics.json").is_file(), "metrics.json of a run")
    for name in PLOTS:
        check_png(out / name)
    t1 = time.time()

    # (2) skipping: a point over the memory limit is skipped with a reason, runs nothing
    out2 = scratch / "skip"
    rc = driver(["--ringattn", binary, "--mpiexec", mpiexec, "--ranks", "1", "--lengths",
                 "1048576", "--d", "128", "--heads", "2", "--mode", "strong",
                 "--max-memory-gb", "0.5", "--out", str(out2)], cwd=scratch)
    check(rc == 0, f"skip sweep: driver exited {rc}")
    if (out2 / "results.csv").is_file():
        rows = read_rows(out2 / "results.csv")
        check(len(rows) == 1 and rows[0]["status"] == "skipped"
              and "memory" in rows[0]["reason"], f"skip sweep rows: {rows}")
    else:
        check(False, "skip sweep: results.csv missing")
    check(not (out2 / "inputs").exists() or not any((out2 / "inputs").iterdir()),
          "skip sweep generated an input")

    print(f"sweep {t1 - t0:.1f} s, total {time.time() - t0:.1f} s")
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    shutil.rmtree(scratch, ignore_errors=True)
    print("scaling study test: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
