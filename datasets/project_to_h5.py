#!/usr/bin/env python3
"""Apply a model's attention projections to a sequence: q, k, v for ringattn.

    project_to_h5.py --weights W.safetensors|W.h5 (--hidden H.h5 | --tokens T.h5)
                     -o OUT.h5 [--prefix P] [--layout ringattn|linear --head-dim D]
                     [--rope none|neox|gptj] [--rope-base B] [--rope-dims R]
                     [--dtype f32|f16] [--block T] [--overwrite]

The input is a sequence's hidden states (what the model feeds the layer),
or token ids looked up in the weights file's embedding table; the output is
what one attention layer of that model computes before its softmax: per
head q = x W_q + b_q, k = x W_k + b_k, v = x W_v + b_v, rotary position
embedding on q and k where the model has it, so `ringattn run` computes that
layer's attention over the whole sequence (positions past the model's own
window included: the rotation is defined for any position, which is this
converter's choice for long inputs). Streamed --block tokens at a time; the
matrices are read once.

Weights file (HDF5 datasets, or safetensors tensors, by name; F32, F16, BF16
or F64), names after --prefix:
  --layout ringattn (default):
    W_q [H, D_model, D], W_k [H_kv, D_model, D], W_v [H_kv, D_model, D]
    optional b_q [H, D], b_k [H_kv, D], b_v [H_kv, D]
  --layout linear (PyTorch nn.Linear, as transformers checkpoints store it:
  weight [out, in], y = x @ weight.T + bias), --head-dim D required:
    q_proj.weight [H D, D_model], k_proj.weight [H_kv D, D_model],
    v_proj.weight [H_kv D, D_model], optional q_proj.bias [H D], ... ;
    head h is rows h D .. h D + D - 1
  optional embed [V, D_model] (with --tokens; --embed-name to rename)
Hidden states: HDF5 dataset `hidden` [N, D_model] or [B, N, D_model]
(--hidden FILE.h5:NAME for another name). Token ids: HDF5 dataset `tokens`
[N] or [B, N] (--tokens FILE.h5:NAME), integers in [0, V).

Rotary position embedding (--rope, default none), on the first R = --rope-dims
(default D, even) dims of each q and k head, position p = the token's index in
its window, frequency f_i = base^(-2i / R) for i < R / 2, angle p f_i, in
float64:
  neox: dims (i, i + R/2) rotate together (GPT-NeoX, Llama, transformers' rotate_half)
  gptj: dims (2i, 2i + 1) rotate together (GPT-J, the original RoFormer)

Output (HDF5): q [B, H, N, D], k, v [B, H_kv, N, D] (f32 or f16, contiguous),
tokens [B, N] when read from --tokens; root attributes generator, source
(the weights file), input, layout, prefix, rope, rope_base, rope_dims, command.
Needs h5py and numpy (Debian: python3-h5py python3-numpy, /usr/bin/python3).
Errors are one line: exit 2 usage, 3 data (a missing or misshapen tensor), 4 I/O.
"""
import json
import os
import struct
import sys

import _h5common as c

PROG = "project_to_h5"
_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": "<u2"}


class Tensors:
    """Named tensors of an HDF5 or safetensors file, read whole as float64."""

    def __init__(self, path):
        import numpy as np
        self.np = np
        self.path = path
        with open(path, "rb") as f:
            magic = f.read(8)
        if magic.startswith(b"\x89HDF"):
            import h5py
            self.h5 = h5py.File(path, "r")
            self.names = set()
            self.h5.visititems(lambda n, o: self.names.add(n) if isinstance(o, h5py.Dataset) else None)
            self.meta = None
            return
        self.h5 = None
        if len(magic) < 8:
            raise c.Fail(c.EXIT_DATA, f"{path}: neither HDF5 nor safetensors (too short)")
        (n,) = struct.unpack("<Q", magic)
        with open(path, "rb") as f:
            f.seek(8)
            raw = f.read(n)
        try:
            header = json.loads(raw)
        except ValueError:
            raise c.Fail(c.EXIT_DATA, f"{path}: neither HDF5 nor safetensors (no JSON header)")
        header.pop("__metadata__", None)
        self.meta = header
        self.base = 8 + n
        self.names = set(header)

    def get(self, name, required=True):
        np = self.np
        if name not in self.names:
            if required:
                raise c.Fail(c.EXIT_DATA, f"{self.path}: no tensor '{name}'")
            return None
        if self.h5 is not None:
            return self.h5[name][()].astype(np.float64)
        m = self.meta[name]
        if m.get("dtype") not in _DTYPES:
            raise c.Fail(c.EXIT_DATA, f"{self.path}: tensor '{name}' is {m.get('dtype')}; "
                                      "expected F32, F16, BF16 or F64")
        b0, b1 = m["data_offsets"]
        a = np.fromfile(self.path, dtype=_DTYPES[m["dtype"]], count=(b1 - b0) //
                        np.dtype(_DTYPES[m["dtype"]]).itemsize, offset=self.base + b0)
        if m["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        return a.astype(np.float64).reshape(m["shape"])


def load_projections(t, args):
    """W_q [H, Dm, D], W_k, W_v [H_kv, Dm, D] and biases [heads, D] (or None)."""
    p = args.prefix
    if args.layout == "ringattn":
        W = [t.get(p + n) for n in ("W_q", "W_k", "W_v")]
        bias = [t.get(p + n, required=False) for n in ("b_q", "b_k", "b_v")]
    else:
        D = args.head_dim
        W, bias = [], []
        for n in ("q_proj", "k_proj", "v_proj"):
            w = t.get(f"{p}{n}.weight")
            if w.ndim != 2 or w.shape[0] % D:
                raise c.Fail(c.EXIT_DATA, f"{t.path}: '{p}{n}.weight' is {list(w.shape)}; "
                                          f"expected [heads x {D}, D_model]")
            W.append(w.reshape(w.shape[0] // D, D, w.shape[1]).transpose(0, 2, 1))
            b = t.get(f"{p}{n}.bias", required=False)
            bias.append(None if b is None else b.reshape(-1, D))
    for name, w in zip(("W_q", "W_k", "W_v"), W):
        if w.ndim != 3:
            raise c.Fail(c.EXIT_DATA, f"{t.path}: {name} is {list(w.shape)}; expected 3 dims")
    H, Dm, D = W[0].shape
    HK = W[1].shape[0]
    for name, w, heads in (("W_k", W[1], HK), ("W_v", W[2], HK)):
        if w.shape != (heads, Dm, D) or heads == 0 or H % heads:
            raise c.Fail(c.EXIT_DATA, f"{t.path}: {name} is {list(w.shape)}; expected "
                                      f"[H_kv, {Dm}, {D}] with H_kv dividing H = {H}")
    for name, b, heads in zip(("b_q", "b_k", "b_v"), bias, (H, HK, HK)):
        if b is not None and b.shape != (heads, D):
            raise c.Fail(c.EXIT_DATA, f"{t.path}: bias {name} is {list(b.shape)}; "
                                      f"expected [{heads}, {D}]")
    if D > 256:
        raise c.Fail(c.EXIT_DATA, f"{t.path}: head dim {D}: ringattn takes at most 256")
    return W, bias


def rope_tables(args, D, positions):
    """cos, sin [n, R/2] for these positions, or None without RoPE."""
    if args.rope == "none":
        return None
    np = __import__("numpy")
    R = args.rope_dims or D
    if R % 2 or R > D:
        raise c.Fail(c.EXIT_USAGE, f"--rope-dims {R}: must be even and at most D = {D}")
    freq = args.rope_base ** (-np.arange(0, R // 2, dtype=np.float64) * 2.0 / R)
    ang = positions[:, None].astype(np.float64) * freq[None, :]
    return np.cos(ang), np.sin(ang), R


def rotate(x, tables, style):
    """x [n, D] with RoPE on its first R dims."""
    if tables is None:
        return x
    cos, sin, R = tables
    y = x.copy()
    h = R // 2
    if style == "neox":
        a, b = x[:, :h], x[:, h:R]
        y[:, :h], y[:, h:R] = a * cos - b * sin, b * cos + a * sin
    else:
        a, b = x[:, 0:R:2], x[:, 1:R:2]
        y[:, 0:R:2], y[:, 1:R:2] = a * cos - b * sin, b * cos + a * sin
    return y


def open_input(spec, default_name):
    import h5py
    path, _, name = spec.partition(":")
    c.check_source(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise c.Fail(c.EXIT_DATA, f"{path}: not an HDF5 file ({e})")
    name = name or default_name
    if name not in f:
        raise c.Fail(c.EXIT_DATA, f"{path}: no dataset '{name}'")
    return path, f[name]


def parse_args(argv):
    p = c.OneLineParser(prog=PROG, description=__doc__.split("\n")[0],
                        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
                        epilog=__doc__[__doc__.index("The input is"):])
    p.add_argument("--weights", required=True, help="HDF5 or safetensors file of the projections")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--hidden", help="FILE.h5[:NAME]: hidden states [N, D_model] or [B, N, D_model]")
    src.add_argument("--tokens", help="FILE.h5[:NAME]: token ids [N] or [B, N] (needs embed)")
    p.add_argument("-o", "--output", required=True, help="HDF5 file to write")
    p.add_argument("--prefix", default="", help="prepended to every tensor name (e.g. "
                                               "model.layers.0.self_attn.)")
    p.add_argument("--layout", choices=["ringattn", "linear"], default="ringattn",
                   help="tensor names and shapes (see below; default %(default)s)")
    p.add_argument("--head-dim", type=c.positive_int, default=None, help="D (--layout linear)")
    p.add_argument("--embed-name", default="embed", help="embedding table [V, D_model] "
                                                          "(--tokens; not prefixed)")
    p.add_argument("--rope", choices=["none", "neox", "gptj"], default="none",
                   help="rotary position embedding on q and k (default %(default)s)")
    p.add_argument("--rope-base", type=float, default=10000.0, help="default %(default)s")
    p.add_argument("--rope-dims", type=c.positive_int, default=None, help="R (default: D)")
    p.add_argument("--dtype", choices=["f32", "f16"], default="f32")
    p.add_argument("--block", type=c.positive_int, default=4096,
                   help="tokens projected at a time (default %(default)s)")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    if a.layout == "linear" and a.head_dim is None:
        raise c.Fail(c.EXIT_USAGE, "--layout linear needs --head-dim")
    if a.rope_base <= 0:
        raise c.Fail(c.EXIT_USAGE, f"--rope-base {a.rope_base}: must be positive")
    return a


def main():
    args = parse_args(sys.argv[1:])
    import h5py
    import numpy as np
    c.check_source(args.weights)
    t = Tensors(args.weights)
    W, bias = load_projections(t, args)
    H, Dm, D = W[0].shape
    HK = W[1].shape[0]
    embed = None
    if args.tokens:
        in_path, x = open_input(args.tokens, "tokens")
        embed = t.get(args.embed_name)
        if embed.ndim != 2 or embed.shape[1] != Dm:
            raise c.Fail(c.EXIT_DATA, f"{t.path}: {args.embed_name} is {list(embed.shape)}; "
                                      f"expected [V, {Dm}]")
        if x.ndim not in (1, 2) or x.dtype.kind not in "iu":
            raise c.Fail(c.EXIT_DATA, f"{in_path}: tokens must be integers [N] or [B, N]")
    else:
        in_path, x = open_input(args.hidden, "hidden")
        if x.ndim not in (2, 3) or x.shape[-1] != Dm:
            raise c.Fail(c.EXIT_DATA, f"{in_path}: hidden states are {list(x.shape)}; expected "
                                      f"[N, {Dm}] or [B, N, {Dm}] (D_model of the weights)")
    c.check_output(args.output, in_path, args.overwrite)
    batched = x.ndim == (2 if args.tokens else 3)
    B = x.shape[0] if batched else 1
    N = x.shape[1] if batched else x.shape[0]
    if N == 0:
        raise c.Fail(c.EXIT_DATA, f"{in_path}: no tokens")
    dt = np.float16 if args.dtype == "f16" else np.float32

    with c.atomic_output(args.output) as tmp:
        with h5py.File(tmp, "w") as f:
            q = f.create_dataset("q", (B, H, N, D), dtype=dt)
            k = f.create_dataset("k", (B, HK, N, D), dtype=dt)
            v = f.create_dataset("v", (B, HK, N, D), dtype=dt)
            tok = f.create_dataset("tokens", (B, N), dtype=np.int64) if args.tokens else None
            for b in range(B):
                for n0 in range(0, N, args.block):
                    n1 = min(N, n0 + args.block)
                    rows = x[b, n0:n1] if batched else x[n0:n1]
                    if args.tokens:
                        ids = np.asarray(rows, dtype=np.int64)
                        if ids.size and (ids.min() < 0 or ids.max() >= embed.shape[0]):
                            raise c.Fail(c.EXIT_DATA, f"{in_path}: token ids outside "
                                                      f"[0, {embed.shape[0]})")
                        tok[b, n0:n1] = ids
                        e = embed[ids]
                    else:
                        e = np.asarray(rows, dtype=np.float64)
                    tables = rope_tables(args, D, np.arange(n0, n1))
                    for dset, w, bb, heads, rope in ((q, W[0], bias[0], H, True),
                                                     (k, W[1], bias[1], HK, True),
                                                     (v, W[2], bias[2], HK, False)):
                        for h in range(heads):
                            y = e @ w[h] + (bb[h] if bb is not None else 0.0)
                            if rope:
                                y = rotate(y, tables, args.rope)
                            dset[b, h, n0:n1, :] = y.astype(dt)
            a = f.attrs
            a["generator"] = PROG
            a["format_version"] = c.FORMAT_VERSION
            a["source"] = os.path.abspath(args.weights)
            a["input"] = os.path.abspath(in_path)
            a["layout"] = args.layout
            a["prefix"] = args.prefix
            a["rope"] = args.rope
            a["rope_base"] = args.rope_base
            a["rope_dims"] = (args.rope_dims or D) if args.rope != "none" else 0
            a["command"] = " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])
    print(f"{PROG}: wrote {args.output}: q [{B}, {H}, {N}, {D}], k and v [{B}, {HK}, {N}, {D}], "
          f"{args.dtype}, rope {args.rope}")
    return 0


if __name__ == "__main__":
    c.run_main(PROG, main)
