#!/usr/bin/python3
"""Writes the broken inputs tests/reliability/test_bad_input.sh feeds to
`ringattn run`, one file per way an input can be wrong, next to one good file
they are all derived from:

    make_bad_inputs.py DIR

Needs h5py and numpy (Debian's python3-h5py: run it with /usr/bin/python3).
Every file is small: "huge" shapes are chunked datasets with no chunk
written, so they cost a few KiB on disk and only their declared size is big.
"""
import os
import sys

import h5py
import numpy as np

B, H, N, D = 1, 2, 64, 16


def qkv(seed=1, shape=(B, H, N, D), dtype="f4"):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, shape).astype(dtype) for _ in range(3)]


def write(path, datasets):
    with h5py.File(path, "w") as f:
        for name, data in datasets.items():
            if isinstance(data, tuple):  # (creator, args): low-level datasets
                data[0](f, name, *data[1:])
            else:
                f[name] = data


def declared_only(f, name, shape, chunk):
    """A chunked f32 dataset of `shape` with no chunk written."""
    f.create_dataset(name, shape=shape, dtype="f4", chunks=chunk)


def lzf(f, name, data):
    """Compressed with LZF, h5py's own filter (id 32000): h5py registers it
    in its process, but the HDF5 library a C program links has no decoder."""
    f.create_dataset(name, data=data, chunks=data.shape, compression="lzf")


def main(out):
    os.makedirs(out, exist_ok=True)
    os.chdir(out)
    q, k, v = qkv()
    good = {"q": q, "k": k, "v": v}
    write("good.h5", good)

    with open("text.h5", "w") as f:
        f.write("not an HDF5 file, just text\n" * 20)
    data = open("good.h5", "rb").read()
    # Inside the superblock, inside the root group's metadata, between the
    # datasets, and one byte short of the end.
    for tag, cut in [("a", 40), ("b", 700), ("c", len(data) // 2), ("d", len(data) - 1)]:
        with open(f"trunc_{tag}.h5", "wb") as f:
            f.write(data[:cut])

    write("no_v.h5", {"q": q, "k": k})
    write("rank3.h5", {"q": q[0], "k": k[0], "v": v[0]})
    q2, k2, v2 = qkv(2, (2, H, N, D))
    write("batch.h5", {"q": q2, "k": k, "v": v})
    q3, _, _ = qkv(3, (B, H, N, 8))
    write("headdim.h5", {"q": q3, "k": k, "v": v})
    _, _, v4 = qkv(4, (B, H, N + 8, D))
    write("kv_tokens.h5", {"q": q, "k": k, "v": v4})
    q5, _, _ = qkv(5, (B, 3, N, D))
    write("gqa.h5", {"q": q5, "k": k, "v": v})

    write("int.h5", {"q": (q * 100).astype("i4"), "k": k, "v": v})
    write("string.h5", {"q": q, "k": np.full((B, H, N, D), b"x", dtype="S4"), "v": v})
    compound = np.zeros((B, H, N, D), dtype=[("re", "f4"), ("im", "f4")])
    write("compound.h5", {"q": q, "k": k, "v": compound})
    write("float64.h5", {"q": q.astype("f8"), "k": k.astype("f8"), "v": v.astype("f8")})

    write("zero.h5", {"q": np.zeros((B, H, 0, D), "f4"), "k": k, "v": v})
    q6, k6, v6 = qkv(6, (B, H, N, 300))
    write("d300.h5", {"q": q6, "k": k6, "v": v6})
    # 2^40 tokens: 4 TiB per tensor, far over any budget (but a valid file).
    huge = (1, 1, 1 << 40, 256)
    write("huge.h5", {t: (declared_only, huge, (1, 1, 4096, 256)) for t in "qkv"})
    # 2^52 tokens x 256 x 4 bytes = 2^62 bytes per dataset fits in an int64,
    # but a rank's buffers for it (k, v, the ring's two K/V blocks, ...) do not.
    overflow = (1, 1, 1 << 52, 256)
    write("overflow.h5", {t: (declared_only, overflow, (1, 1, 4096, 256)) for t in "qkv"})
    # 2^61 tokens x 256 x 4 bytes: the dataset's own byte count overflows.
    too_big = (1, 1, 1 << 61, 256)
    write("bytes_overflow.h5", {t: (declared_only, too_big, (1, 1, 4096, 256)) for t in "qkv"})

    write("filter.h5", {"q": q, "k": (lzf, k), "v": v})

    # Non-finite values: NaN in q (seen by rank 0), -Inf in k on the second
    # half of the tokens (rank 1 of 2), a later NaN in v that must not be the
    # one named, and f16 with +Inf.
    qn = q.copy()
    qn[0, 1, 37, 5] = np.nan
    write("nan_q.h5", {"q": qn, "k": k, "v": v})
    kn = k.copy()
    kn[0, 0, 50, 3] = -np.inf
    kn[0, 1, 60, 0] = np.nan
    write("inf_k.h5", {"q": q, "k": kn, "v": v})
    q16, k16, v16 = (x.astype("f2") for x in (q, k, v))
    v16[0, 1, 3, 15] = np.inf
    write("inf_v16.h5", {"q": q16, "k": k16, "v": v16})

    write("short.h5", {t: x[:, :, :2] for t, x in good.items()})

    # Links that point nowhere: a soft link and an external link.
    write("dangling.h5", {"q": q, "k": k, "v": h5py.SoftLink("/nowhere")})
    write("dangling_ext.h5", {"q": q, "k": k, "v": h5py.ExternalLink("absent.h5", "/v")})

    # szip, where this HDF5 can encode it. Uniform noise does not shrink, so
    # szip leaves its chunks unfiltered (filter mask set): the case HDF5
    # 1.10's collective reads get wrong. Same values as good.h5.
    if szip_encodes():
        write("szip.h5", {t: (szip, x) for t, x in good.items()})


def szip_encodes():
    if not h5py.h5z.filter_avail(h5py.h5z.FILTER_SZIP):
        return False
    return bool(h5py.h5z.get_filter_info(h5py.h5z.FILTER_SZIP) & h5py.h5z.FILTER_CONFIG_ENCODE_ENABLED)


def szip(f, name, data):
    f.create_dataset(name, data=data, chunks=data.shape[:2] + (32, data.shape[3]),
                     compression="szip")


if __name__ == "__main__":
    main(sys.argv[1])
