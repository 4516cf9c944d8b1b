#!/usr/bin/env python3
"""Draw attention weights written by `ringattn weights`.

    plot_weights.py W.h5 --out PREFIX [--batch B] [--head H] [--row I] [--heatmap]
                    [--keys A:B]

For one query row (token I, default the first in the file) of query head H
(default the first in the file) of batch B: its weights along the key axis,
PREFIX_b<B>_h<H>_row<I>.png and .pdf (a line over every key for full rows, a
stem per key for a top-K file). With --heatmap (full rows only): every row in
the file against the keys, PREFIX_b<B>_h<H>_heatmap.png and .pdf, on a log
colour scale (weights span many decades). --keys A:B limits the key axis.
PNG at 200 dpi and PDF (vector) side by side. Needs h5py, numpy, matplotlib
(Debian: python3-h5py python3-numpy python3-matplotlib, under /usr/bin/python3).
Exit 0 on success, 2 for a bad request (one line on stderr).
"""
import argparse
import sys


def fail(msg):
    print(f"plot_weights: {msg}", file=sys.stderr)
    sys.exit(2)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("weights", help="file written by ringattn weights")
    p.add_argument("--out", required=True, help="prefix of the files to write")
    p.add_argument("--batch", type=int, default=0)
    p.add_argument("--head", type=int, default=None, help="query head (default: the first)")
    p.add_argument("--row", type=int, default=None, help="query token (default: the first)")
    p.add_argument("--heatmap", action="store_true", help="also draw every row (full rows)")
    p.add_argument("--keys", default=None, metavar="A:B", help="key range to draw")
    a = p.parse_args()

    import h5py
    import numpy as np
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import MaxNLocator

    try:
        f = h5py.File(a.weights, "r")
    except OSError as e:
        fail(f"cannot read '{a.weights}': {e}")
    if f.attrs.get("generator") != "ringattn weights":
        fail(f"'{a.weights}' was not written by ringattn weights")
    rows, heads = f["rows"][:], f["heads"][:]
    top = "top_keys" in f
    B = (f["top_weights"] if top else f["weights"]).shape[0]
    if not 0 <= a.batch < B:
        fail(f"--batch {a.batch}: the file has batches 0..{B - 1}")
    head = heads[0] if a.head is None else a.head
    row = rows[0] if a.row is None else a.row
    if head not in heads:
        fail(f"--head {head}: the file has heads {list(heads)}")
    if row not in rows:
        fail(f"--row {row}: not among the file's {len(rows)} rows")
    j, r = int(np.flatnonzero(heads == head)[0]), int(np.flatnonzero(rows == row)[0])
    nk = None if top else f["weights"].shape[3]
    lo, hi = 0, nk
    if a.keys:
        try:
            lo, hi = (int(x) for x in a.keys.split(":"))
        except ValueError:
            fail(f"--keys '{a.keys}' is not A:B")
    where = f"b{a.batch}_h{head}"
    what = f"query token {row}, head {head}" + (f", batch {a.batch}" if B > 1 else "")
    if "row_tokens" in f:  # the input's token id of that row (weights records it when it can)
        what += f" (token id {int(f['row_tokens'][a.batch, r])})"

    fig, ax = plt.subplots(figsize=(8, 3))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # keys are whole tokens
    if top:
        keys = f["top_keys"][a.batch, j, r, :]
        w = f["top_weights"][a.batch, j, r, :]
        keep = keys >= 0
        if a.keys:
            keep &= (keys >= lo) & (keys < hi)
        ax.stem(keys[keep], w[keep], basefmt=" ")
        ax.set_title(f"Top {len(keys)} keys of {what}")
    else:
        w = f["weights"][a.batch, j, r, lo:hi]
        x = np.arange(lo, lo + len(w))
        if len(w) > 2000:  # one dot per key: a line between 48K keys is a solid block
            ax.plot(x, w, ".", ms=1, alpha=0.5)
        else:
            ax.plot(x, w, lw=0.8)
        ax.set_title(f"Attention weights of {what}")
    ax.set_xlabel("key token")
    ax.set_ylabel("weight")
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    written = []
    for ext in ("png", "pdf"):
        path = f"{a.out}_{where}_row{row}.{ext}"
        fig.savefig(path, dpi=200)
        written.append(path)
    plt.close(fig)

    if a.heatmap:
        if top:
            fail("--heatmap needs full rows (the file holds top-K keys)")
        m = f["weights"][a.batch, j, :, lo:hi].astype(np.float64)
        positive = m[m > 0]
        fig, ax = plt.subplots(figsize=(8, 4))
        im = ax.imshow(np.where(m > 0, m, np.nan), aspect="auto", interpolation="nearest",
                       norm=LogNorm(vmin=max(positive.min(), 1e-8), vmax=positive.max())
                       if positive.size else None,
                       extent=(lo, lo + m.shape[1], len(rows), 0))
        ax.set_yticks(np.arange(len(rows)) + 0.5)
        ax.set_yticklabels([str(x) for x in rows] if len(rows) <= 20 else [""] * len(rows))
        ax.set_xlabel("key token")
        ax.set_ylabel("query token")
        ax.set_title(f"Attention weights, head {head} (log scale; blank: masked)")
        fig.colorbar(im, ax=ax, label="weight")
        fig.tight_layout()
        for ext in ("png", "pdf"):
            path = f"{a.out}_{where}_heatmap.{ext}"
            fig.savefig(path, dpi=200)
            written.append(path)
        plt.close(fig)
    for path in written:
        print(f"plot_weights: wrote {path}")


if __name__ == "__main__":
    main()
