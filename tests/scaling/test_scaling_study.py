#!/usr/bin/python3
"""ctest: launch/scaling_study/scaling_study.py on a tiny sweep.

    test_scaling_study.py RINGATTN_BINARY MPIEXEC [SCRATCH_DIR]

Runs ranks 1,2 x lengths 512,1024, D 32, H 2, mode both, 2 repeats under
mpirun and checks that results.csv has one row per point, all ok with
positive times and efficiencies, the repeats' spread (min <= kept <= max, the
runs listed) and the context (host, CPU, commit, date); that every plot is a
valid, non-trivial PNG at 200 dpi with a PDF beside it; that --plot-only
redraws from the CSV alone (SVG too, whose caption names the CPU, commit and
date) and from an older driver's CSV without the new columns. Then a
run-free sweep checks that a point over --max-memory-gb is skipped with a
reason, not failed. Every point is planned by `ringattn plan` (its predicted
ring time in the CSV, dashed in the time plot).
"""

import csv
import datetime
import json
import os
import re
import struct
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
PLOTS = ["time_vs_ranks", "gflops_per_rank", "efficiency", "breakdown"]
CONTEXT_COLUMNS = ["host", "nodes", "cpu", "cpus", "vector_isa", "commit", "version", "mpi",
                   "date"]
SPREAD_COLUMNS = ["repeats", "wall_s_min", "wall_s_max", "wall_s_runs", "gflops_per_rank_min",
                  "gflops_per_rank_max", "efficiency_min", "efficiency_max", "oversubscribed",
                  "shared_cores"]
REPEATS = 2

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
    rgb = np.round(flat[:, :3] * 255).astype(np.uint32)
    colours = np.unique((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2])
    check(len(colours) > 10, f"{path.name}: only {len(colours)} colours")
    # something drawn besides the white background
    non_white = float(np.mean(np.any(flat[:, :3] < 0.9, axis=1)))
    check(non_white > 0.01, f"{path.name}: {non_white:.3%} of pixels are not white")
    dpi = png_dpi(data)
    check(dpi is not None and dpi >= 199, f"{path.name}: {dpi} dpi, want 200 or more")


def png_dpi(data):
    """The resolution in the PNG's pHYs chunk (pixels per metre), None without one."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"pHYs":
            ppm_x, _, unit = struct.unpack(">IIB", data[pos + 8:pos + 17])
            return ppm_x * 0.0254 if unit == 1 else None
        if kind == b"IDAT":
            return None
        pos += 12 + length
    return None


def drawn_text(svg):
    """An SVG's text as drawn: without its <metadata> (which holds the caption
    as its description whether or not the caption is drawn)."""
    return re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)


def check_pdf(path):
    if not path.is_file():
        check(False, f"{path.name} missing")
        return
    data = path.read_bytes()
    check(data[:5] == b"%PDF-", f"{path.name}: not a PDF (starts {data[:8]!r})")
    check(len(data) > 5000 and b"%%EOF" in data[-64:], f"{path.name}: {len(data)} bytes, "
          "or no end of file")
    # vector: no image in the page, and TrueType fonts (not Type 3) embedded
    check(b"/Subtype /Image" not in data, f"{path.name}: holds a raster image")
    check(b"FontFile2" in data and b"/Type3" not in data, f"{path.name}: fonts not Type 42")


def floats(r, *cols):
    try:
        return [float(r[c]) for c in cols]
    except (KeyError, TypeError, ValueError):
        return None


def check_spread(r, where):
    """The repeats' spread: every run's wall time listed, min <= kept <= max,
    and the same ordering carried to GFLOP/s per rank and efficiency."""
    check(r.get("repeats") == str(REPEATS), f"{where}: repeats {r.get('repeats')!r}")
    runs = [float(x) for x in (r.get("wall_s_runs") or "").split(";") if x]
    check(len(runs) == REPEATS, f"{where}: wall_s_runs {r.get('wall_s_runs')!r}")
    v = floats(r, "wall_s", "wall_s_min", "wall_s_max")
    if v is None or not runs:
        check(False, f"{where}: wall_s_min/max missing")
        return
    wall, lo, hi = v
    check(abs(lo - min(runs)) <= 1e-5 * lo and abs(hi - max(runs)) <= 1e-5 * hi,
          f"{where}: wall_s_min/max {lo}, {hi} vs runs {runs}")
    check(any(abs(wall - x) <= 1e-5 * wall for x in runs), f"{where}: kept {wall} not a run")
    check(lo <= wall <= hi, f"{where}: wall_s {wall} outside [{lo}, {hi}]")
    for key in ("gflops_per_rank", "efficiency"):
        v = floats(r, key, f"{key}_min", f"{key}_max")
        check(v is not None and v[1] * (1 - 1e-5) <= v[0] <= v[2] * (1 + 1e-5),
              f"{where}: {key} outside its min..max: {v}")
    check(r.get("oversubscribed") in ("true", "false"),
          f"{where}: oversubscribed {r.get('oversubscribed')!r}")
    cpus = len(os.sched_getaffinity(0))  # as the driver counts them
    check((r.get("oversubscribed") == "true") == (int(r["ranks"]) > cpus),
          f"{where}: oversubscribed {r.get('oversubscribed')} with {cpus} CPUs")


def check_context(r, where):
    for col in ("host", "cpu", "commit", "version", "mpi", "date"):
        check(bool(r.get(col)), f"{where}: empty {col}")
    check(bool(re.fullmatch(r"[0-9a-f]{7,40}|unknown", r.get("commit") or "")),
          f"{where}: commit {r.get('commit')!r}")
    try:
        when = datetime.datetime.fromisoformat(r.get("date") or "")
        age = datetime.datetime.now().astimezone() - when
        check(when.tzinfo is not None and datetime.timedelta(0) <= age
              <= datetime.timedelta(hours=1), f"{where}: date {r['date']} is not now")
    except ValueError:
        check(False, f"{where}: date {r.get('date')!r} is not ISO 8601")
    check(r.get("nodes") == "1" and r.get("cpus") == str(len(os.sched_getaffinity(0))),
          f"{where}: nodes {r.get('nodes')!r}, cpus {r.get('cpus')!r}")


def check_shared_cores(binary, mpiexec, scratch):
    """The driver's shared-core check on a real run whose two ranks are pinned
    to one core (OMP_PROC_BIND with an unbound launch, the mistake that made a
    study report efficiency 0.24), and on one whose ranks are not."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("scaling_study", DRIVER)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    d = scratch / "shared"
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run([binary, "gen", "--output", str(d / "in.h5"), "--n", "512", "--d", "16"],
                   check=True, capture_output=True)
    verdicts = {}
    for name, env in (("pinned", {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}),
                      ("unbound", {"OMP_PROC_BIND": "false"})):
        metrics = d / f"{name}.json"
        r = subprocess.run([mpiexec, "-np", "2", "--bind-to", "none", "-x", "OMP_PROC_BIND",
                            "-x", "OMP_PLACES", binary, "run", "--input", str(d / "in.h5"),
                            "--output", str(d / f"{name}.h5"), "--threads", "1",
                            "--progress", "none", "--metrics", str(metrics)],
                           env={**os.environ, "OMP_PLACES": "cores", **env},
                           capture_output=True, text=True)
        check(r.returncode == 0, f"shared-core run {name}: exit {r.returncode}: {r.stderr}")
        if r.returncode == 0:
            with open(metrics) as f:
                m = json.load(f)
            check(all(rk.get("cpus") for rk in m["ranks"]), f"{name}: no cpus in {m['ranks']}")
            verdicts[name] = study.shared_cores(m)
    if os.cpu_count() and os.cpu_count() >= 2:
        check("could run on 1 CPUs only" in verdicts.get("pinned", ""),
              f"two ranks pinned to one core not flagged: {verdicts}")
        check(verdicts.get("unbound") == "", f"unbound ranks flagged: {verdicts}")


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
                 "--mode", "both", "--causal", "--threads-per-rank", "1",
                 "--repeats", str(REPEATS), "--out", str(out)],
                cwd=scratch)
    check(rc == 0, f"driver exited {rc}")
    csv_path = out / "results.csv"
    check(csv_path.is_file(), "results.csv missing")
    if csv_path.is_file():
        rows = read_rows(csv_path)
        for col in ["mode", "ranks", "n", "d", "heads", "causal", "wall_s", "gflops",
                    "gflops_per_rank", "efficiency", "compute_s", "comm_wait_s", "io_s",
                    "peak_rss_mb", "status", "reason"] + SPREAD_COLUMNS + CONTEXT_COLUMNS:
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
            # the ring model planned the point: its ring time is below the
            # job's estimate, which adds I/O and startup
            check(0 < float(r["pred_ring_s"] or 0) < float(r["est_seconds"] or 0),
                  f"{where}: planned ring time {r['pred_ring_s']!r}, estimate "
                  f"{r['est_seconds']!r}")
            check(abs(float(r["gflops_per_rank"]) * int(r["ranks"]) - float(r["gflops"]))
                  <= 1e-3 * float(r["gflops"]), f"{where}: gflops_per_rank != gflops / P")
            if r["ranks"] == "1":
                check(abs(float(r["efficiency"]) - 1) < 1e-9, f"{where}: baseline efficiency "
                      f"{r['efficiency']}")
            check(float(r["efficiency"]) < 20, f"{where}: efficiency {r['efficiency']}")
            check_spread(r, where)
            check_context(r, where)
        for rid in ("p1_n512", "p2_n2048"):
            rdir = out / "runs" / rid
            check((rdir / "metrics.json").is_file(), f"metrics.json of {rid}")
            for rep in range(REPEATS):
                check((rdir / f"metrics.{rep}.json").is_file(), f"metrics.{rep}.json of {rid}")
    for name in PLOTS:
        check_png(out / f"{name}.png")
        check_pdf(out / f"{name}.pdf")
        check(not (out / f"{name}.svg").exists(), f"{name}.svg written without svg asked")
    t1 = time.time()

    # (1b) --plot-only from the CSV alone: SVG too, and its caption (text in
    # the SVG) names the CPU, the commit and the day the points ran
    if csv_path.is_file():
        rows = read_rows(csv_path)
        replot = scratch / "replot"
        replot.mkdir()
        shutil.copyfile(csv_path, replot / "results.csv")
        rc = driver(["--plot-only", "--plot-formats", "png,svg", "--out", str(replot)],
                    cwd=scratch)
        check(rc == 0, f"--plot-only exited {rc}")
        for name in PLOTS:
            check_png(replot / f"{name}.png")
            check(not (replot / f"{name}.pdf").exists(), f"{name}.pdf written without pdf asked")
            svg = replot / f"{name}.svg"
            if not svg.is_file():
                check(False, f"replot: {name}.svg missing")
                continue
            raw = svg.read_text(errors="replace")
            check(raw.lstrip().startswith("<?xml") and "<svg" in raw, f"{name}.svg: not SVG")
            text = drawn_text(raw)
            for what in ("cpu", "commit"):
                check(rows[0][what] in text, f"{name}.svg: caption lacks {what} "
                      f"{rows[0][what]!r}")
            check(rows[0]["date"][:10] in text, f"{name}.svg: caption lacks the date")
            check(f"{REPEATS} runs per point" in text, f"{name}.svg: caption lacks the repeats")
        rc = driver(["--plot-only", "--plot-formats", "svg", "--no-caption", "--out",
                     str(replot)], cwd=scratch)
        bare = drawn_text((replot / "efficiency.svg").read_text(errors="replace"))
        check(rc == 0 and rows[0]["commit"] not in bare and "Parallel efficiency" in bare,
              "--no-caption: the caption is still drawn")
        rc = driver(["--plot-only", "--plot-formats", "png,eps", "--out", str(replot)],
                    cwd=scratch)
        check(rc == 2, f"--plot-formats eps: exit {rc}, want 2 (usage error)")

        # an older driver's CSV (no spread, no context, no oversubscribed) still plots
        old_dir = scratch / "old_csv"
        old_dir.mkdir()
        old_cols = [c for c in rows[0] if c not in SPREAD_COLUMNS + CONTEXT_COLUMNS]
        with open(old_dir / "results.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=old_cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        rc = driver(["--plot-only", "--out", str(old_dir)], cwd=scratch)
        check(rc == 0, f"--plot-only on an older CSV exited {rc}")
        for name in PLOTS:
            check_png(old_dir / f"{name}.png")
            check_pdf(old_dir / f"{name}.pdf")

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

    check_shared_cores(binary, mpiexec, scratch)

    print(f"sweep {t1 - t0:.1f} s, total {time.time() - t0:.1f} s")
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    shutil.rmtree(scratch, ignore_errors=True)
    print("scaling study test: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
