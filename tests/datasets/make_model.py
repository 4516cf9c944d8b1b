"""The project case of test_datasets.sh: a small random model and its checks.

    make_model.py                  writes model.safetensors (linear layout, a
                                   bf16 tensor and f32 ones, biases),
                                   model.h5 (ringattn layout, an embedding),
                                   hidden.h5 and ids.h5 in the current folder
    make_model.py --check          lin.h5 and ids_out.h5 (project_to_h5.py's
                                   outputs) against numpy's x W + b and RoPE
    make_model.py --check-attention IN OUT
                                   OUT's causal o against numpy's float64
                                   attention of IN's q, k, v
Exit 0 when the checks hold; an AssertionError otherwise.
"""
import json
import struct
import sys

import h5py
import numpy as np

DM, H, HK, D, N = 48, 4, 2, 16, 300


def bf16_bits(a):
    """Round to bf16, nearest even (as torch does), as uint16 bits."""
    u = a.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def make():
    rng = np.random.default_rng(5)
    w = {"q_proj.weight": rng.standard_normal((H * D, DM)) / 7,
         "k_proj.weight": rng.standard_normal((HK * D, DM)) / 7,
         "v_proj.weight": rng.standard_normal((HK * D, DM)) / 7,
         "q_proj.bias": rng.standard_normal(H * D) / 3,
         "k_proj.bias": rng.standard_normal(HK * D) / 3}
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for i, (name, a) in enumerate(w.items()):
        raw = bf16_bits(a).tobytes() if i == 0 else a.astype("<f4").tobytes()
        header["layer.0." + name] = {"dtype": "BF16" if i == 0 else "F32",
                                     "shape": list(a.shape),
                                     "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    with open("model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    with h5py.File("model.h5", "w") as f:
        f["W_q"] = rng.standard_normal((H, DM, D)) / 7
        f["W_k"] = rng.standard_normal((HK, DM, D)) / 7
        f["W_v"] = rng.standard_normal((HK, DM, D)) / 7
        f["b_v"] = rng.standard_normal((HK, D))
        f["embed"] = rng.standard_normal((50, DM))
    with h5py.File("hidden.h5", "w") as f:
        f["hidden"] = rng.standard_normal((N, DM))
    with h5py.File("ids.h5", "w") as f:
        f["tokens"] = rng.integers(0, 50, N)


def rope(x, base, r, style):
    p = np.arange(x.shape[0])[:, None]
    freq = base ** (-np.arange(r // 2) * 2.0 / r)
    c, s = np.cos(p * freq), np.sin(p * freq)
    y = x.copy()
    if style == "neox":
        a, b = x[:, :r // 2], x[:, r // 2:r]
        y[:, :r // 2], y[:, r // 2:r] = a * c - b * s, b * c + a * s
    else:
        a, b = x[:, 0:r:2], x[:, 1:r:2]
        y[:, 0:r:2], y[:, 1:r:2] = a * c - b * s, b * c + a * s
    return y


def safetensor(raw, name):
    """One tensor of model.safetensors, read independently of the converter."""
    n = struct.unpack("<Q", raw[:8])[0]
    m = json.loads(raw[8:8 + n])["layer.0." + name]
    b0, b1 = m["data_offsets"]
    data = raw[8 + n + b0:8 + n + b1]
    if m["dtype"] == "BF16":
        a = (np.frombuffer(data, "<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        a = np.frombuffer(data, "<f4")
    return a.astype(np.float64).reshape(m["shape"])


def close(got, want, what):
    err = np.abs(got - want).max()
    assert err < 1e-5 * max(1.0, np.abs(want).max()), (what, err)


def check():
    raw = open("model.safetensors", "rb").read()
    x = h5py.File("hidden.h5")["hidden"][:]
    out = h5py.File("lin.h5")
    for name, heads, bias, rot in (("q", H, True, True), ("k", HK, True, True),
                                   ("v", HK, False, False)):
        w = safetensor(raw, name + "_proj.weight")
        for h in range(heads):
            y = x @ w[h * D:(h + 1) * D].T
            if bias:
                y = y + safetensor(raw, name + "_proj.bias")[h * D:(h + 1) * D]
            if rot:
                y = rope(y, 500.0, D, "neox")
            close(out[name][0, h], y, f"linear {name} head {h}")
    m, ids = h5py.File("model.h5"), h5py.File("ids.h5")["tokens"][:]
    o2 = h5py.File("ids_out.h5")
    assert (o2["tokens"][0] == ids).all()
    e = m["embed"][:][ids]
    for name, heads in (("q", H), ("k", HK), ("v", HK)):
        for h in range(heads):
            y = e @ m["W_" + name][h]
            y = y + m["b_v"][h] if name == "v" else rope(y, 10000.0, 8, "gptj")
            close(o2[name][0, h], y, f"ringattn layout {name} head {h}")


def check_attention(inp, outp):
    f, o = h5py.File(inp), h5py.File(outp)["o"]
    worst = 0.0
    for h in range(H):
        q = f["q"][0, h].astype(np.float64)
        k = f["k"][0, h // (H // HK)].astype(np.float64)
        v = f["v"][0, h // (H // HK)].astype(np.float64)
        s = q @ k.T / np.sqrt(D)
        s[np.triu_indices(N, 1)] = -np.inf
        p = np.exp(s - s.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        ref = p @ v
        worst = max(worst, np.abs(o[0, h] - ref).max() / np.abs(ref).max())
    assert worst < 1e-5, worst


if __name__ == "__main__":
    if len(sys.argv) == 1:
        make()
    elif sys.argv[1] == "--check":
        check()
    else:
        check_attention(sys.argv[2], sys.argv[3])
    print("ok")
