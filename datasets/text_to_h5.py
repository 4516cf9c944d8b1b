#!/usr/bin/python3
"""text_to_h5.py: a long text as a ringattn input (q, k, v in HDF5).

Reads a text file (plain or gzip), turns it into a token stream and writes
q, k, v shaped [B, H, N, D] for `ringattn run`.

Tokens. --tokens bytes (default): each byte of the file is a token, id =
the byte value 0..255, feature = its one-hot (F = 256). --tokens words: the
text is decoded as UTF-8 (bad bytes become U+FFFD), optionally lower-cased
(--lowercase), and split into words (runs of letters, digits and '_') and
single punctuation characters; whitespace separates and is dropped. A
word's id is the first 8 bytes of BLAKE2b(word as UTF-8), little-endian,
top bit cleared (stable across runs, machines and Python versions, unlike
Python's hash()). Its features are hashed into F = --hash-buckets entries:
bucket1 = id mod F with sign +1 if bit 62 of id is 0 else -1, and
bucket2 = (id >> 32) mod F with sign +1 if bit 61 is 0 else -1; the feature
vector is sign1 at bucket1 plus sign2 at bucket2, scaled by 1/sqrt(2).

Embedding and projection (rule shared with fasta_to_h5.py, see
datasets/_h5common.py; stored in the `projection` attribute):

    rng = numpy.random.default_rng(seed)
    P   = rng.standard_normal((F, D))                  (scale 1)
    W_q = rng.standard_normal((H, D, D)) / sqrt(D);  W_k, W_v: (H_kv, D, D), same scale
    q[b, h, n] = (features(token[b*N + n]) @ P) @ W_q[h]     (k, v with W_k[g], W_v[g])

Output file (HDF5):
    q       [B, H,    N, D]  f32 or f16, chunked (1, 1, min(N, block), D)
    k, v    [B, H_kv, N, D]  same type and chunking
    tokens  [B, N]           int32 (bytes) or int64 (words: the hash ids)
    root attributes: generator, format_version, source (absolute path),
      source_size, tokenizer (bytes|words), lowercase, offset, hash_buckets
      (words), seed, dtype, batch, heads, kv_heads, n, d, tokens_available,
      tokens_used, feature_dim, projection, command.

N is the number of tokens divided by B (--batch), capped by --max-tokens;
tokens past B*N are dropped. --offset skips that many bytes of the text
first (e.g. a Project Gutenberg header). Memory: the text and its token ids,
plus O(block * D) for the projections; the datasets are written block by
block. The file is written under a temporary name beside the output and
renamed when complete; an existing output is replaced only with --overwrite.

Exit status: 0 ok, 2 bad option, 3 bad data (empty text), 4 I/O (missing
file, existing output). Errors are one line.

Example:
    datasets/text_to_h5.py /usr/share/gocode/src/github.com/pierrec/lz4/testdata/pg1661.txt \\
        -o holmes.h5 --tokens words --lowercase --d 64 --heads 8 --kv-heads 2
    mpirun -np 2 build/ringattn run --input holmes.h5 --output holmes_out.h5 --causal
"""

import hashlib
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _h5common as c  # noqa: E402  (first: a clear error without numpy/h5py)
import numpy as np  # noqa: E402

PROG = "text_to_h5"
GENERATOR = "ringattn datasets/text_to_h5.py"
_WORD = re.compile(r"\w+|[^\w\s]")


def parse_args(argv):
    p = c.OneLineParser(
        prog="text_to_h5.py",
        description=__doc__.split("\n\n")[0] + " See the format below.",
        epilog=__doc__[__doc__.index("Tokens."):],
        formatter_class=c.argparse.RawDescriptionHelpFormatter)
    p.add_argument("text", help="text file (plain or gzip)")
    p.add_argument("--tokens", choices=["bytes", "words"], default="bytes",
                   help="one token per byte, or per word / punctuation mark (default %(default)s)")
    p.add_argument("--lowercase", action="store_true", help="words: lower-case the text first")
    p.add_argument("--hash-buckets", type=c.positive_int, default=4096,
                   help="words: feature-hashing width F (default %(default)s)")
    p.add_argument("--offset", type=int, default=0,
                   help="skip this many bytes at the start of the text (default %(default)s)")
    c.add_common_options(p)
    args = p.parse_args(argv)
    c.check_common(args)
    if args.offset < 0:
        raise c.Fail(c.EXIT_USAGE, f"--offset {args.offset} is negative")
    if args.hash_buckets < 2:
        raise c.Fail(c.EXIT_USAGE, "--hash-buckets must be at least 2")
    return args


def word_id(word):
    h = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def word_tokens(data, lowercase, limit):
    text = data.decode("utf-8", "replace")
    if lowercase:
        text = text.lower()
    ids = []
    cache = {}
    for m in _WORD.finditer(text):
        w = m.group(0)
        i = cache.get(w)
        if i is None:
            i = cache[w] = word_id(w)
        ids.append(i)
        if limit is not None and len(ids) >= limit:
            break
    return np.array(ids, dtype=np.int64)


def make_word_embed(F):
    def embed(tb, P):
        tb = np.asarray(tb, dtype=np.int64)
        b1 = tb % F
        b2 = (tb >> 32) % F
        s1 = np.where((tb >> 62) & 1, -1.0, 1.0)
        s2 = np.where((tb >> 61) & 1, -1.0, 1.0)
        return (s1[:, None] * P[b1] + s2[:, None] * P[b2]) / np.sqrt(2.0)

    return embed


def byte_embed(tb, P):
    return P[np.asarray(tb, dtype=np.int64)]


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    c.check_source(args.text)
    c.check_output(args.output, args.text, args.overwrite)
    limit = None if args.max_tokens is None else args.max_tokens * args.batch
    with c.open_maybe_gzip(args.text) as f:
        if args.offset:
            f.read(args.offset)
        if args.tokens == "bytes":
            data = f.read() if limit is None else f.read(limit)
        else:
            data = f.read()
    if args.tokens == "bytes":
        tokens = np.frombuffer(data, dtype=np.uint8).astype(np.int32)
        F, embed = 256, byte_embed
    else:
        tokens = word_tokens(data, args.lowercase, limit)
        F, embed = args.hash_buckets, make_word_embed(args.hash_buckets)
    if tokens.size == 0:
        where = f" after --offset {args.offset}" if args.offset else ""
        raise c.Fail(c.EXIT_DATA, f"{args.text}: no {args.tokens} to tokenize{where} (empty text)")
    attrs = {
        "generator": GENERATOR,
        "tokenizer": args.tokens,
        "lowercase": int(args.lowercase),
        "offset": args.offset,
    }
    if args.tokens == "words":
        attrs["hash_buckets"] = args.hash_buckets
        attrs["word_rule"] = ("regex \\w+|[^\\w\\s] on UTF-8 text; id = blake2b(word, 8 bytes) "
                              "little-endian & (2^63-1)")
    B, N = c.write_dataset_file(args, args.text, tokens, embed, F, 1.0, attrs)
    c.summary(PROG, args, B, N)
    return 0


if __name__ == "__main__":
    c.run_main(PROG, main)
