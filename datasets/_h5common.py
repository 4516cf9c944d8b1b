"""Shared parts of the ringattn dataset converters (fasta_to_h5.py, text_to_h5.py).

Not a script. Holds what both converters do the same way: one-line errors
with ringattn's exit codes, the common command-line options, the output-file
rules (refuse to replace without --overwrite, never the source, write under
a temporary name and rename when complete), and the block-streaming writer
that turns token embeddings into q, k, v through seeded per-head projections.

Projection rule (both converters), with rng = numpy.random.default_rng(seed)
and F the converter's feature width (see each script):

    P   = rng.standard_normal((F, D))       * feature_scale      token features -> D
    W_q = rng.standard_normal((H,   D, D))  / sqrt(D)            drawn in this order
    W_k = rng.standard_normal((H_kv, D, D)) / sqrt(D)
    W_v = rng.standard_normal((H_kv, D, D)) / sqrt(D)

    e_t       = features(token_t) @ P                             (float64)
    q[b,h,n]  = e_{t(b,n)} @ W_q[h],  k[b,g,n] = e @ W_k[g],  v[b,g,n] = e @ W_v[g]

rounded once to the output type (f32 or f16). t(b, n) = b * N + n: window b
is tokens [b*N, (b+1)*N) of the token stream.

Packed output (--packed): B = 1 and the token stream is S sequences laid end
to end (FASTA records, text documents), T = N tokens in all, plus the dataset
cu_seqlens, int64 [S + 1]: sequence s is tokens cu_seqlens[s] ..
cu_seqlens[s+1]-1; the first entry is 0, the last T, non-decreasing (an empty
sequence repeats an entry). With --max-tokens M a sequence that crosses
token M is cut there and the sequences starting at M or later are dropped.
"""

import argparse
import contextlib
import gzip
import os
import sys
import tempfile

try:
    import numpy as np
    import h5py
except ImportError as _e:
    print(f"{os.path.basename(sys.argv[0])}: error: {_e}: run it with /usr/bin/python3 "
          "(Debian's python3-numpy and python3-h5py)", file=sys.stderr)
    sys.exit(2)

# ringattn's exit codes (README, "Exit codes").
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_IO = 4

FORMAT_VERSION = 1


class Fail(Exception):
    """An error reported as one line; code is the exit status."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message):
        raise Fail(EXIT_USAGE, f"{message} (see --help)")


def run_main(prog, main):
    """Calls main(); a Fail or an OS error becomes one stderr line and its exit code."""
    try:
        sys.exit(main())
    except Fail as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(e.code)
    except KeyboardInterrupt:
        print(f"{prog}: error: interrupted", file=sys.stderr)
        sys.exit(130)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(EXIT_IO)


def positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{v} is not positive")
    return v


def seed_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer")
    if v < 0 or v >= 2**63:
        raise argparse.ArgumentTypeError(f"seed {v} is outside 0..2^63-1")
    return v


def add_common_options(p, default_d=64):
    """The options every converter has (shape, type, seed, output)."""
    p.add_argument("-o", "--output", required=True, help="HDF5 file to write (required)")
    p.add_argument("--d", type=positive_int, default=default_d,
                   help="D: head dim, 1..256 (default %(default)s)")
    p.add_argument("--heads", type=positive_int, default=4,
                   help="H: query heads (default %(default)s)")
    p.add_argument("--kv-heads", type=positive_int, default=None,
                   help="H_kv: key/value heads, dividing H (default: H)")
    p.add_argument("--dtype", choices=["f32", "f16"], default="f32",
                   help="element type of q, k, v (default %(default)s; f16 = IEEE half)")
    p.add_argument("--max-tokens", type=positive_int, default=None,
                   help="cap N, the tokens per window (default: all tokens)")
    p.add_argument("--batch", type=positive_int, default=1,
                   help="B: split the token stream into B consecutive windows of equal "
                        "length N (default %(default)s)")
    p.add_argument("--seed", type=seed_int, default=0,
                   help="seed of numpy.random.default_rng for the projections (default %(default)s)")
    p.add_argument("--block", type=positive_int, default=4096,
                   help="tokens projected and written at a time (default %(default)s)")
    p.add_argument("--chunk-tokens", type=positive_int, default=None, metavar="C",
                   help="store q, k, v in chunks of (1, 1, C, D) instead of contiguously "
                        "(default: contiguous, the fastest layout for ringattn's shard "
                        "reads; with --gzip, C = 2048)")
    p.add_argument("--gzip", type=int, choices=range(1, 10), metavar="1..9", default=None,
                   help="deflate q, k, v at this level (default: none); needs chunks, "
                        "see --chunk-tokens")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def check_common(args):
    """Option checks argparse cannot express; fills args.kv_heads."""
    if args.d > 256:
        raise Fail(EXIT_USAGE, f"--d {args.d}: the head dim is at most 256")
    if args.kv_heads is None:
        args.kv_heads = args.heads
    if args.heads % args.kv_heads != 0:
        raise Fail(EXIT_USAGE, f"--kv-heads {args.kv_heads} does not divide --heads {args.heads}")


def check_packed(args):
    """--packed writes one batch row: --batch cannot split it."""
    if args.packed and args.batch != 1:
        raise Fail(EXIT_USAGE, f"--batch {args.batch} cannot be used with --packed "
                               "(a packed file has B = 1; its sequences are in cu_seqlens)")


def parse_converter_args(p, argv, packed_help):
    """Adds --packed (help: packed_help, what one sequence is) and the common
    options to the converter's parser p, parses argv and checks both."""
    p.add_argument("--packed", action="store_true", help=packed_help)
    add_common_options(p)
    args = p.parse_args(argv)
    check_common(args)
    check_packed(args)
    return args


def packed_bounds(lengths, max_tokens):
    """cu_seqlens (int64 [S + 1]) of sequences of these token counts, laid end to end.

    With max_tokens M (T = min(total, M)), a sequence crossing token M is
    cut there and the sequences starting at M or later are dropped. Empty
    sequences repeat an entry.
    """
    cu = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.asarray(lengths, dtype=np.int64), out=cu[1:])
    if max_tokens is not None:
        keep = int(np.count_nonzero(cu[:-1] < max_tokens))  # sequences starting before M
        cu = np.minimum(cu[:keep + 1], max_tokens)
    return cu


def check_source(path):
    if not os.path.exists(path):
        raise Fail(EXIT_IO, f"{path}: no such file")
    if not os.path.isfile(path):
        raise Fail(EXIT_IO, f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise Fail(EXIT_IO, f"{path}: not readable")


def check_output(path, source, overwrite):
    """The output rules, checked before any work."""
    if os.path.isdir(path):
        raise Fail(EXIT_IO, f"{path}: is a directory")
    if os.path.exists(path):
        if os.path.samefile(path, source):
            raise Fail(EXIT_IO, f"{path}: the output is the input file")
        if not overwrite:
            raise Fail(EXIT_IO, f"{path}: exists (pass --overwrite to replace it)")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise Fail(EXIT_IO, f"{path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise Fail(EXIT_IO, f"{path}: directory {parent} is not writable")


def open_maybe_gzip(path):
    """Binary file object; gzip-compressed files (by magic bytes) are decompressed."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def make_projections(seed, n_features, d, heads, kv_heads, feature_scale):
    """P, W_q, W_k, W_v by the rule in this module's docstring."""
    rng = np.random.default_rng(seed)
    P = rng.standard_normal((n_features, d)) * feature_scale
    s = 1.0 / np.sqrt(d)
    Wq = rng.standard_normal((heads, d, d)) * s
    Wk = rng.standard_normal((kv_heads, d, d)) * s
    Wv = rng.standard_normal((kv_heads, d, d)) * s
    return P, Wq, Wk, Wv


@contextlib.contextmanager
def atomic_output(path):
    """Yields a temporary path beside `path` (mode 0666 less the umask, as a
    plain create would give); renamed onto `path` when the block completes,
    removed when it raises."""
    out = os.path.abspath(path)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(out) + ".", suffix=".tmp",
                               dir=os.path.dirname(out))
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_dataset_file(args, source, tokens, embed, n_features, feature_scale, attrs,
                       cu_seqlens=None):
    """Writes args.output: q, k, v and `tokens` from the token stream.

    source: the input file, or a list of them (attributes `source`: their
    absolute paths one per line, `source_size`: their total size).
    tokens: 1-D integer array, the whole token stream (at least B tokens).
    embed(tok_block, P) -> float64 [len(block), D]: the embeddings of a block.
    attrs: converter-specific root attributes (added to the common ones).
    cu_seqlens: packed output (B = 1), from packed_bounds(); its last entry
    must be the N written. Written as the int64 dataset `cu_seqlens`.
    Returns (B, N). Writes to a temporary file beside the output, renamed
    over it only when complete.
    """
    sources = [source] if isinstance(source, str) else list(source)
    B = args.batch
    total = int(tokens.shape[0])
    N = total // B
    if N == 0:
        raise Fail(EXIT_DATA, f"{total} tokens cannot make {B} windows (--batch {B})")
    if args.max_tokens is not None:
        N = min(N, args.max_tokens)
    if cu_seqlens is not None:
        cu_seqlens = np.asarray(cu_seqlens, dtype=np.int64)
        if (B != 1 or cu_seqlens.ndim != 1 or cu_seqlens.size < 2 or cu_seqlens[0] != 0
                or cu_seqlens[-1] != N or (np.diff(cu_seqlens) < 0).any()):
            raise AssertionError(f"cu_seqlens {cu_seqlens} do not bound {N} tokens in B = 1")
    H, HK, D = args.heads, args.kv_heads, args.d
    dt = np.float16 if args.dtype == "f16" else np.float32
    P, Wq, Wk, Wv = make_projections(args.seed, n_features, D, H, HK, feature_scale)
    block = min(args.block, N)
    # Contiguous unless asked for chunks (or compression, which needs them):
    # ringattn reads token ranges of whole heads, which a contiguous dataset
    # serves with one seek per head; 2048-token chunks keep the part of a
    # chunk that a rank decodes but does not need small.
    chunk = args.chunk_tokens or (2048 if args.gzip else None)
    layout = {"chunks": (1, 1, min(chunk, N), D)} if chunk else {}
    if args.gzip:
        layout.update(compression="gzip", compression_opts=args.gzip)

    with atomic_output(args.output) as tmp:
        with h5py.File(tmp, "w") as f:
            q = f.create_dataset("q", (B, H, N, D), dtype=dt, **layout)
            k = f.create_dataset("k", (B, HK, N, D), dtype=dt, **layout)
            v = f.create_dataset("v", (B, HK, N, D), dtype=dt, **layout)
            tok_dtype = np.int32 if int(tokens.max(initial=0)) < 2**31 else np.int64
            t = f.create_dataset("tokens", (B, N), dtype=tok_dtype)
            for b in range(B):
                for n0 in range(0, N, block):
                    n1 = min(N, n0 + block)
                    tb = tokens[b * N + n0: b * N + n1]
                    t[b, n0:n1] = tb
                    e = embed(tb, P)  # [n1-n0, D] float64
                    for h in range(H):
                        q[b, h, n0:n1, :] = (e @ Wq[h]).astype(dt)
                    for g in range(HK):
                        k[b, g, n0:n1, :] = (e @ Wk[g]).astype(dt)
                        v[b, g, n0:n1, :] = (e @ Wv[g]).astype(dt)
            if cu_seqlens is not None:
                f.create_dataset("cu_seqlens", data=cu_seqlens, dtype=np.int64)
            a = f.attrs
            a["generator"] = attrs.pop("generator")
            a["format_version"] = FORMAT_VERSION
            a["source"] = "\n".join(os.path.abspath(p) for p in sources)
            a["source_size"] = sum(os.stat(p).st_size for p in sources)
            a["seed"] = args.seed
            a["dtype"] = args.dtype
            a["batch"] = B
            a["heads"] = H
            a["kv_heads"] = HK
            a["n"] = N
            a["d"] = D
            a["tokens_available"] = total
            a["tokens_used"] = B * N
            if cu_seqlens is not None:
                a["packed"] = 1
                a["sequences"] = cu_seqlens.size - 1
            a["feature_dim"] = n_features
            a["projection"] = ("rng=numpy.random.default_rng(seed); P=rng.standard_normal((F,D))"
                               f"*{feature_scale!r}; W_q=rng.standard_normal((H,D,D))/sqrt(D); "
                               "W_k, W_v likewise with H_kv; q[b,h,n]=(features(tok[b*N+n])@P)"
                               "@W_q[h], k and v with W_k[g], W_v[g]")
            a["command"] = " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])
            for name, value in attrs.items():
                a[name] = value
    return B, N


def convert(prog, args, source, tokens, embed, n_features, feature_scale, attrs,
            sequence_tokens):
    """write_dataset_file, then the summary line. sequence_tokens: the token
    count of each sequence (record, document) in the stream, for --packed."""
    cu = packed_bounds(sequence_tokens, args.max_tokens) if args.packed else None
    B, N = write_dataset_file(args, source, tokens, embed, n_features, feature_scale, attrs,
                              cu_seqlens=cu)
    summary(prog, args, B, N, None if cu is None else cu.size - 1)


def summary(prog, args, B, N, sequences=None):
    size = os.path.getsize(args.output)
    packed = ("" if sequences is None else
              f", packed: {sequences} sequence{'' if sequences == 1 else 's'} in cu_seqlens")
    print(f"{prog}: wrote {args.output}: q [{B}, {args.heads}, {N}, {args.d}], "
          f"k and v [{B}, {args.kv_heads}, {N}, {args.d}], {args.dtype}, seed {args.seed}"
          f"{packed}, {size / 2**20:.1f} MiB")
