"""h5py, the tool most readers of our results use, and the io layer
understand each other's files:

1. a file written by OutputFile (io_write_sample on 2 ranks) reads back in
   h5py with the right shapes, types, values, chunking, string/int/float
   root attributes and the completion mark, and nothing but it is left in
   the directory;
2. an input h5py wrote in float16 (q chunked with gzip, grouped-query k/v,
   cross-attention lengths) passes validation and its q comes back
   through InputFile and OutputFile unchanged (2 and 3 ranks).

Usage: check_h5py.py IO_WRITE_SAMPLE MPIEXEC
"""
import json
import os
import subprocess
import sys
import tempfile

try:
    import h5py
    import numpy as np
except ImportError as e:  # ctest counts exit code 77 as skipped
    print(f"skipped: {e}")
    sys.exit(77)


def run(mpiexec, ranks, *args):
    subprocess.run([mpiexec, "-n", str(ranks), "--oversubscribe", *args], check=True,
                   timeout=240)


def check_written_by_output_file(writer, mpiexec, d):
    out = os.path.join(d, "sample.h5")
    run(mpiexec, 2, writer, out)
    assert os.listdir(d) == ["sample.h5"], os.listdir(d)
    with h5py.File(out, "r") as f:
        o, lse = f["o"], f["lse"]
        assert o.shape == (2, 3, 37, 4) and o.dtype == np.float32, (o.shape, o.dtype)
        assert lse.shape == (2, 3, 37) and lse.dtype == np.float32, (lse.shape, lse.dtype)
        assert o.chunks == (1, 1, 37, 4), o.chunks
        b, h, t, dd = np.meshgrid(np.arange(2), np.arange(3), np.arange(37), np.arange(4),
                                  indexing="ij")
        want = (((b * 10 + h) * 100 + t) * 10 + dd).astype(np.float32)
        np.testing.assert_array_equal(o[...], want)
        want_lse = np.broadcast_to(-np.arange(37, dtype=np.float32) - 0.5, (2, 3, 37))
        np.testing.assert_array_equal(lse[...], want_lse)
        a = f.attrs
        assert a["version"] == "io-sample", a["version"]
        assert json.loads(a["config"]) == {"causal": False, "block": 37}, a["config"]
        assert a["ranks"] == 2 and a["partition"] == "zigzag", dict(a)
        assert a["scale"] == 0.5, a["scale"]
        assert a["complete"] == 1, a["complete"]
    os.remove(out)


def check_h5py_input_round_trip(writer, mpiexec, d):
    rng = np.random.default_rng(7)
    q = rng.standard_normal((2, 4, 45, 8)).astype(np.float16)
    k = rng.standard_normal((2, 2, 29, 8)).astype(np.float16)
    src = os.path.join(d, "input.h5")
    with h5py.File(src, "w") as f:
        f.create_dataset("q", data=q, chunks=(1, 1, 16, 8), compression="gzip")
        f.create_dataset("k", data=k)
        f.create_dataset("v", data=k)
    for ranks in (2, 3):
        out = os.path.join(d, f"copy{ranks}.h5")
        run(mpiexec, ranks, writer, out, src)
        with h5py.File(out, "r") as f:
            np.testing.assert_array_equal(f["o"][...], q.astype(np.float32))
            np.testing.assert_array_equal(
                f["lse"][...], np.broadcast_to(np.arange(45, dtype=np.float32), (2, 4, 45)))


def main():
    writer, mpiexec = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory(prefix="ringattn-h5py-") as d:
        check_written_by_output_file(writer, mpiexec, d)
        check_h5py_input_round_trip(writer, mpiexec, d)
    print("h5py and the io layer read each other's files")


if __name__ == "__main__":
    main()
