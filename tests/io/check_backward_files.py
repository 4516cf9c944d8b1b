"""The backward's files, end to end through the programs users run:

1. `ringattn gen --backward` writes `do` beside q, k, v: q's shape and type,
   the seed rule's values for seed + 3; without --backward there is none;
2. `ringattn info` (text and --json) lists it, gives the backward's verdict
   (OK, or NOT USABLE naming the dataset, with the input itself still OK),
   and notices o and lse there for --reuse-forward;
3. an output OutputFile wrote with gradients (io_write_sample --gradients
   on 2 ranks) reads back in h5py with dq, dk, dv in f32 and the right
   values, and `ringattn info` lists its gradients.

Usage: check_backward_files.py RINGATTN IO_WRITE_SAMPLE MPIEXEC
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from seeded_data import seeded  # noqa: E402  (gen's value rule)


def ringattn(binary, *args):
    """Runs the command; returns (exit code, stdout)."""
    p = subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


def check_gen(binary, d):
    plain, grad = os.path.join(d, "plain.h5"), os.path.join(d, "grad.h5")
    rc, out = ringattn(binary, "gen", "--output", plain, "--n", "32", "--d", "8")
    assert rc == 0, out
    with h5py.File(plain, "r") as f:
        assert sorted(f.keys()) == ["k", "q", "v"], list(f.keys())
    rc, out = ringattn(binary, "gen", "--output", grad, "--heads", "4", "--kv-heads", "2", "--n",
                       "64", "--n-kv", "48", "--d", "16", "--dtype", "f16", "--seed", "5",
                       "--amplitude", "2", "--backward")
    assert rc == 0, out
    assert "q and do [1, 4, 64, 16]" in out, out
    with h5py.File(grad, "r") as f:
        assert sorted(f.keys()) == ["do", "k", "q", "v"], list(f.keys())
        do = f["do"]
        assert do.shape == (1, 4, 64, 16) and do.dtype == np.float16, (do.shape, do.dtype)
        data = do[...].reshape(-1)
        for i in [0, 1, 777, data.size - 1]:
            want = np.float16(seeded(5 + 3, i, 2.0))
            assert data[i] == want, (i, data[i], want)
        assert not np.array_equal(data, f["q"][...].reshape(-1)), "do is q"
        assert "seed + 3 for do" in f.attrs["seed_rule"], f.attrs["seed_rule"]
    return grad


def check_info_input(binary, grad, d):
    rc, out = ringattn(binary, "info", grad)
    assert rc == 0, out
    lines = out.splitlines()
    assert any(l.split()[:3] == ["do", "[1,", "4,"] and " f16, contiguous" in l
               for l in lines), out
    assert "input: OK" in out and "backward: OK (do f16)" in out, out
    rc, out = ringattn(binary, "info", "--json", grad)
    assert rc == 0, out
    j = json.loads(out)
    assert [x["name"] for x in j["datasets"]] == ["do", "k", "q", "v"], j["datasets"]
    assert j["input"]["valid"], j["input"]
    assert j["input"]["backward"] == {"valid": True, "do": "do", "do_dtype": "f16",
                                      "reuse_forward": False}, j["input"]

    # A do of another shape: the input is still fine for a forward run.
    bad = os.path.join(d, "bad_do.h5")
    with h5py.File(grad, "r") as src, h5py.File(bad, "w") as f:
        for n in "qkv":
            f.create_dataset(n, data=src[n][...])
        f.create_dataset("do", data=src["do"][:, :, :63])
    rc, out = ringattn(binary, "info", bad)
    assert rc == 0, out
    assert "input: OK" in out, out
    assert "backward: NOT USABLE: input error: " in out and "'do'" in out, out
    assert "exactly like 'q'" in out, out
    rc, out = ringattn(binary, "info", "--json", bad)
    bw = json.loads(out)["input"]["backward"]
    assert not bw["valid"] and "'do'" in bw["error"], bw

    # o and lse beside them, as --reuse-forward reads them; then a 4-d lse.
    reuse = os.path.join(d, "reuse.h5")
    with h5py.File(grad, "r") as src, h5py.File(reuse, "w") as f:
        for n in ["q", "k", "v", "do"]:
            f.create_dataset(n, data=src[n][...])
        f.create_dataset("o", data=np.zeros((1, 4, 64, 16), np.float32))
        f.create_dataset("lse", data=np.zeros((1, 4, 64), np.float32))
    rc, out = ringattn(binary, "info", reuse)
    assert "backward: OK (do f16; o and lse for --reuse-forward)" in out, out
    rc, out = ringattn(binary, "info", "--json", reuse)
    assert json.loads(out)["input"]["backward"]["reuse_forward"] is True, out
    with h5py.File(reuse, "a") as f:
        del f["lse"]
        f.create_dataset("lse", data=np.zeros((1, 4, 64, 1), np.float32))
    rc, out = ringattn(binary, "info", reuse)
    assert rc == 0, out
    assert "backward: NOT USABLE" in out and "'lse'" in out and "expected 3" in out, out


def check_gradient_output(binary, writer, mpiexec, d):
    out_path = os.path.join(d, "grads.h5")
    subprocess.run([mpiexec, "-n", "2", "--oversubscribe", writer, "--gradients", out_path],
                   check=True, timeout=240)
    with h5py.File(out_path, "r") as f:
        assert sorted(f.keys()) == ["dk", "dq", "dv", "lse", "o"], list(f.keys())
        b, h, t, dd = np.meshgrid(np.arange(2), np.arange(3), np.arange(37), np.arange(4),
                                  indexing="ij")
        o = (((b * 10 + h) * 100 + t) * 10 + dd).astype(np.float32)
        assert f["dq"].shape == (2, 3, 37, 4) and f["dq"].dtype == np.float32
        np.testing.assert_array_equal(f["dq"][...], o + np.float32(0.25))
        b, h, t, dd = np.meshgrid(np.arange(2), np.arange(1), np.arange(23), np.arange(4),
                                  indexing="ij")
        dk = -(((b * 10 + h) * 100 + t) * 10 + dd).astype(np.float32)
        for name, want in [("dk", dk), ("dv", dk - np.float32(0.5))]:
            ds = f[name]
            assert ds.shape == (2, 1, 23, 4) and ds.dtype == np.float32, (name, ds.shape, ds.dtype)
            assert ds.chunks == (1, 1, 23, 4), (name, ds.chunks)
            np.testing.assert_array_equal(ds[...], want)
        assert f.attrs["complete"] == 1
    rc, out = ringattn(binary, "info", out_path)
    assert rc == 0 and "output: complete; gradients dq, dk, dv" in out, out
    rc, out = ringattn(binary, "info", "--json", out_path)
    j = json.loads(out)
    assert j["output"] == {"complete": True, "gradients": ["dq", "dk", "dv"]}, j["output"]


def main():
    binary, writer, mpiexec = sys.argv[1], sys.argv[2], sys.argv[3]
    with tempfile.TemporaryDirectory(prefix="ringattn-backward-") as d:
        grad = check_gen(binary, d)
        check_info_input(binary, grad, d)
        check_gradient_output(binary, writer, mpiexec, d)
    print("gen --backward, info and h5py agree on the backward's files")


if __name__ == "__main__":
    main()
