#!/usr/bin/python3
"""Seed corpus for fuzz_input_validation: small files, valid and broken, of
every kind a subcommand opens: inputs (run, verify --input), outputs and
partial outputs with their attributes (info, verify --output, a resume).

Run with Debian's Python (/usr/bin/python3, which has h5py and numpy):
    make_seeds.py OUTDIR
Each file is a few kilobytes: tiny shapes, so the fuzzer mutates metadata
(superblock, object headers, B-trees, filters), which is what validation
reads, rather than bulk data. Generated at test time; nothing is committed.
"""
import os
import sys

import h5py
import numpy as np

B, H, N, D = 1, 2, 3, 4


def arr(shape, dtype="f4"):
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape) / 7


def write(path, q, k, v, **kw):
    with h5py.File(path, "w") as f:
        for name, x in (("q", q), ("k", k), ("v", v)):
            if x is not None:
                f.create_dataset(name, data=x, **kw)


def main(out):
    os.makedirs(out, exist_ok=True)
    p = lambda name: os.path.join(out, name)
    s = (B, H, N, D)
    # Valid inputs.
    write(p("f32_contiguous"), arr(s), arr(s), arr(s))
    write(p("f16_contiguous"), arr(s, "f2"), arr(s, "f2"), arr(s, "f2"))
    write(p("f32_chunked_gzip"), arr(s), arr(s), arr(s), chunks=(1, 1, 2, D), compression="gzip")
    write(p("f16_chunked_shuffle_gzip"), arr(s, "f2"), arr(s, "f2"), arr(s, "f2"),
          chunks=(1, 2, 3, 2), compression="gzip", shuffle=True)
    write(p("f32_gqa_cross"), arr((B, 4, N, D)), arr((B, 2, 5, D)), arr((B, 2, 5, D)))
    write(p("f32_big_endian"), arr(s, ">f4"), arr(s, ">f4"), arr(s, ">f4"))
    with h5py.File(p("f32_grouped_names_attrs"), "w") as f:
        g = f.create_group("attn")
        for name in "qkv":
            g.create_dataset(name, data=arr(s))
        f["q"] = h5py.SoftLink("/attn/q")
        f["k"] = f["attn/k"]  # hard link
        f.create_dataset("v", data=arr(s), compression="lzf")
        f.attrs["note"] = "seed"
    with h5py.File(p("f32_compact_latest"), "w", libver="latest") as f:
        for name in "qkv":
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_layout(h5py.h5d.COMPACT)
            space = h5py.h5s.create_simple(s)
            ds = h5py.h5d.create(f.id, name.encode(), h5py.h5t.IEEE_F32LE, space, dcpl=dcpl)
            ds.write(h5py.h5s.ALL, h5py.h5s.ALL, arr(s))
    # Broken inputs: each should be refused with a message.
    write(p("bad_missing_v"), arr(s), arr(s), None)
    write(p("bad_rank3"), arr((H, N, D)), arr((H, N, D)), arr((H, N, D)))
    write(p("bad_float64"), arr(s, "f8"), arr(s, "f8"), arr(s, "f8"))
    write(p("bad_int32"), arr(s).astype("i4"), arr(s).astype("i4"), arr(s).astype("i4"))
    write(p("bad_head_dim"), arr((1, 1, 1, 300)), arr((1, 1, 1, 300)), arr((1, 1, 1, 300)))
    write(p("bad_gqa_heads"), arr((B, 3, N, D)), arr((B, 2, N, D)), arr((B, 2, N, D)))
    write(p("bad_mixed_types"), arr(s), arr(s, "f2"), arr(s))
    with h5py.File(p("bad_scalar_and_group"), "w") as f:
        f.create_dataset("q", data=np.float32(1))
        f.create_group("k")
        f.create_dataset("v", shape=(B, 0, N, D), dtype="f4")
    # Links that point nowhere, and szip where this HDF5 encodes it.
    with h5py.File(p("bad_dangling_links"), "w") as f:
        f.create_dataset("q", data=arr(s))
        f["k"] = h5py.SoftLink("/nowhere")
        f["v"] = h5py.ExternalLink("absent.h5", "/v")
    if h5py.h5z.filter_avail(h5py.h5z.FILTER_SZIP):
        write(p("f32_chunked_szip"), arr(s), arr(s), arr(s), chunks=(1, 1, 3, D),
              compression="szip")
    # What run writes: o, lse and the attributes info and verify read; and a
    # partial output with its progress record.
    with h5py.File(p("output_complete"), "w") as f:
        f.create_dataset("o", data=arr(s), chunks=(1, 1, 3, D))
        f.create_dataset("lse", data=arr((B, H, N)))
        f.attrs["config"] = '{"causal": true, "scale": 0.5}'
        f.attrs["causal"] = np.int64(1)
        f.attrs["scale"] = 0.5
        f.attrs["compute"] = "f32"
        for t in "qkv":
            f.attrs[t + "_dataset"] = t
        f.attrs["input_size"] = np.int64(1234)
        f.attrs["ranks"] = np.arange(3, dtype="i8")
        f.attrs["weights"] = np.linspace(0, 1, 4)
        f.attrs["big"] = np.uint64(2**63 + 1)
        f.attrs["complete"] = np.int64(1)
    with h5py.File(p("output_partial"), "w") as f:
        f.create_dataset("o", data=arr(s, "f2"))
        f.attrs["resume_key"] = '{"causal": false}'
        f.attrs["chunks_done"] = np.int64(1)
    with open(p("f32_contiguous"), "rb") as f:
        whole = f.read()
    with open(p("bad_truncated"), "wb") as f:
        f.write(whole[: len(whole) // 2])
    with open(p("bad_not_hdf5"), "wb") as f:
        f.write(b"q,k,v\n1,2,3\n")


if __name__ == "__main__":
    main(sys.argv[1])
