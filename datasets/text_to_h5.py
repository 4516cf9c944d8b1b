#!/usr/bin/python3
"""text_to_h5.py: a long text as a ringattn input (q, k, v in HDF5).

Reads one or more text files (plain or gzip), turns them into a token
stream and writes q, k, v shaped [B, H, N, D] for `ringattn run`, or with
--packed one packed row of sequences, one per document.

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

Several files, documents, packed (--packed). Several TEXT files are read in
the order given, --offset skipping the start of each, and are tokenized one
at a time (a word never spans two files); their token streams are
concatenated. Each file is one document, or, with --separator STRING, the
pieces of each file between occurrences of STRING (matched in the raw bytes
as its UTF-8 encoding, before --lowercase, and dropped; --separator needs
--packed). With --packed each document is one sequence: their tokens are
laid end to end in one batch row (B = 1, T = N tokens in all) and the int64
dataset cu_seqlens [S + 1] bounds them: sequence s is tokens cu_seqlens[s]
.. cu_seqlens[s+1]-1, the first entry 0, the last T, non-decreasing; an
empty document (an empty file, two adjacent separators) is an empty sequence
and repeats an entry. --max-tokens M caps T: the document crossing token M
is cut there and documents starting at M or later are dropped (files past it
are not read). --batch above 1 is refused with --packed.

Embedding and projection (rule shared with fasta_to_h5.py, see
datasets/_h5common.py; stored in the `projection` attribute):

    rng = numpy.random.default_rng(seed)
    P   = rng.standard_normal((F, D))                  (scale 1)
    W_q = rng.standard_normal((H, D, D)) / sqrt(D);  W_k, W_v: (H_kv, D, D), same scale
    q[b, h, n] = (features(token[b*N + n]) @ P) @ W_q[h]     (k, v with W_k[g], W_v[g])

Output file (HDF5):
    q       [B, H,    N, D]  f32 or f16; contiguous, or chunked (1, 1, min(N, C), D)
                             with --chunk-tokens C or --gzip (C = 2048)
    k, v    [B, H_kv, N, D]  same type and layout
    tokens  [B, N]           int32 (bytes) or int64 (words: the hash ids)
    cu_seqlens [S + 1]       int64, only with --packed (then B = 1 and N = T):
                             sequence s = tokens cu_seqlens[s] .. cu_seqlens[s+1]-1
    root attributes: generator, format_version, source (absolute path; for
      several files their paths, one per line), source_size (their total),
      tokenizer (bytes|words), lowercase, offset, hash_buckets (words),
      separator (with --separator), seed, dtype, batch, heads, kv_heads, n,
      d, tokens_available, tokens_used, feature_dim, projection, command;
      with --packed also packed (1) and sequences (S).

N is the number of tokens divided by B (--batch), capped by --max-tokens;
tokens past B*N are dropped. --offset skips that many bytes of the text
first (e.g. a Project Gutenberg header). With --max-tokens byte tokens are
read only as far as needed (with --separator each file is read whole).
Memory: the text and its token ids, plus O(block * D) for the projections;
the datasets are written block by block. The file is written under a
temporary name beside the output and renamed when complete; an existing
output is replaced only with --overwrite.

Exit status: 0 ok, 2 bad option, 3 bad data (empty text: no token in all
the files), 4 I/O (missing file, existing output). Errors are one line.

Example:
    datasets/text_to_h5.py /usr/share/gocode/src/github.com/pierrec/lz4/testdata/pg1661.txt \\
        -o holmes.h5 --tokens words --lowercase --d 64 --heads 8 --kv-heads 2
    mpirun -np 2 build/ringattn run --input holmes.h5 --output holmes_out.h5 --causal

Packed, three files as three sequences; one file split at blank lines:
    datasets/text_to_h5.py a.txt b.txt c.txt -o docs.h5 --packed
    datasets/text_to_h5.py corpus.txt -o docs.h5 --packed --separator $'\\n\\n'
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
    p.add_argument("text", nargs="+",
                   help="text file (plain or gzip); several are read in order, concatenated "
                        "(with --packed: each one document)")
    p.add_argument("--tokens", choices=["bytes", "words"], default="bytes",
                   help="one token per byte, or per word / punctuation mark (default %(default)s)")
    p.add_argument("--lowercase", action="store_true", help="words: lower-case the text first")
    p.add_argument("--hash-buckets", type=c.positive_int, default=4096,
                   help="words: feature-hashing width F (default %(default)s)")
    p.add_argument("--offset", type=int, default=0,
                   help="skip this many bytes at the start of the text, of each file "
                        "(default %(default)s)")
    p.add_argument("--separator", metavar="STRING", default=None,
                   help="split each file into documents at every STRING (its UTF-8 bytes, "
                        "dropped; e.g. $'\\n\\n' in bash); needs --packed")
    args = c.parse_converter_args(
        p, argv, "packed output: B = 1, each document (file, or piece between separators) "
                 "one sequence, their bounds in the int64 dataset cu_seqlens [S+1] (empty "
                 "documents allowed); not with --batch > 1")
    if args.separator is not None:
        if not args.packed:
            raise c.Fail(c.EXIT_USAGE, "--separator splits documents for --packed: pass "
                                       "--packed too")
        if not args.separator:
            raise c.Fail(c.EXIT_USAGE, "--separator: the separator is empty")
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


def read_documents(path, args, limit):
    """The documents of one file: [bytes], after --offset, split by --separator.

    limit: bytes wanted (byte tokens without --separator), None for all.
    """
    with c.open_maybe_gzip(path) as f:
        if args.offset:
            f.read(args.offset)
        if args.tokens == "bytes" and args.separator is None and limit is not None:
            data = f.read(limit)
        else:
            data = f.read()
    if args.separator is None:
        return [data]
    return data.split(args.separator.encode("utf-8"))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for path in args.text:
        c.check_source(path)
    for path in args.text:
        c.check_output(args.output, path, args.overwrite)
    limit = None if args.max_tokens is None else args.max_tokens * args.batch
    parts, lengths = [], []
    used = 0
    for path in args.text:
        left = None if limit is None else limit - used
        if left is not None and left <= 0:
            break  # the documents from here on start at or past --max-tokens
        for doc in read_documents(path, args, left):
            left = None if limit is None else limit - used
            if left is not None and left <= 0:
                break
            if args.tokens == "bytes":
                t = np.frombuffer(doc if left is None else doc[:left], dtype=np.uint8)
                t = t.astype(np.int32)
            else:
                t = word_tokens(doc, args.lowercase, left)
            parts.append(t)
            lengths.append(len(t))
            used += len(t)
    tokens = np.concatenate(parts)
    if args.tokens == "bytes":
        F, embed = 256, byte_embed
    else:
        F, embed = args.hash_buckets, make_word_embed(args.hash_buckets)
    if tokens.size == 0:
        where = f" after --offset {args.offset}" if args.offset else ""
        names = ", ".join(args.text)
        raise c.Fail(c.EXIT_DATA, f"{names}: no {args.tokens} to tokenize{where} (empty text)")
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
    if args.separator is not None:
        attrs["separator"] = args.separator
    c.convert(PROG, args, args.text, tokens, embed, F, 1.0, attrs, lengths)
    return 0


if __name__ == "__main__":
    c.run_main(PROG, main)
