#!/usr/bin/python3
"""fasta_to_h5.py: a FASTA genome as a ringattn input (q, k, v in HDF5).

Reads a FASTA file (plain or gzip, one or many records), turns the selected
records into a token stream and writes q, k, v shaped [B, H, N, D] for
`ringattn run`, or with --packed one packed row of sequences, one per record.

Tokens. With --k 1 each nucleotide is a token: A=0, C=1, G=2, T=3 (U counts
as T, lower case as upper case), anything else (N, IUPAC codes, gaps) is the
unknown token 4. With --k K > 1 each overlapping K-mer is a token (a record
of L nucleotides gives L-K+1): id = sum_j code_j * 4^(K-1-j), and any K-mer
holding an unknown nucleotide is the unknown token 4^K. K-mers never span two
records; selected records are concatenated in file order.

Packed (--packed). Each selected record is one sequence (with --records all:
every record, e.g. each contig or read); their tokens are laid end to end in
file order in one batch row (B = 1, T = N tokens in all) and the int64
dataset cu_seqlens [S + 1] bounds them: sequence s is tokens cu_seqlens[s] ..
cu_seqlens[s+1]-1, the first entry 0, the last T, non-decreasing; record s
gives L_s - K + 1 tokens. One record (the default --records) gives S = 1.
--max-tokens caps T: the record crossing the cap is cut there and records
after it are not read. --batch above 1 is refused with --packed.

Embedding. A token's feature vector has F = 4K+1 entries: for each position
j of the K-mer a one-hot of its nucleotide (entry 4j + code_j), or, for the
unknown token, only entry 4K. With K = 1 this is the one-hot over
{A, C, G, T, unknown}. Features are projected to D by a seeded random matrix
P (scaled by 1/sqrt(K)) and then per head by W_q, W_k, W_v (see the rule in
datasets/_h5common.py, also stored in the `projection` attribute):

    rng = numpy.random.default_rng(seed)
    P   = rng.standard_normal((F, D)) / sqrt(K)
    W_q = rng.standard_normal((H, D, D)) / sqrt(D);  W_k, W_v: (H_kv, D, D), same scale
    q[b, h, n] = (features(token[b*N + n]) @ P) @ W_q[h]     (k, v with W_k[g], W_v[g])

Output file (HDF5):
    q       [B, H,    N, D]  f32 or f16; contiguous, or chunked (1, 1, min(N, C), D)
                             with --chunk-tokens C or --gzip (C = 2048)
    k, v    [B, H_kv, N, D]  same type and layout
    tokens  [B, N]           int32: the token ids (window b = tokens b*N .. b*N+N-1)
    cu_seqlens [S + 1]       int64, only with --packed (then B = 1 and N = T):
                             sequence s = tokens cu_seqlens[s] .. cu_seqlens[s+1]-1
    root attributes: generator, format_version, source (absolute path),
      source_size, records (the record ids used, in order, separated by
      spaces), record_lengths
      (nucleotides read; with --max-tokens reading stops once there are
      enough tokens, so the last length may be a prefix's), record_tokens,
      k, alphabet, unknown_token, seed, dtype,
      batch, heads, kv_heads, n, d, tokens_available, tokens_used,
      feature_dim, projection (the rule above), command; with --packed also
      packed (1) and sequences (S).

N is the number of tokens divided by B (--batch), capped by --max-tokens;
tokens past B*N are dropped. Memory: the selected sequence (1 byte per
nucleotide, plus the token ids) and O(block * D) for the projections; the
datasets are written block by block. The file is written under a temporary
name beside the output and renamed when complete; an existing output is
replaced only with --overwrite.

Exit status: 0 ok, 2 bad option, 3 bad data (no such record, empty record,
not FASTA), 4 I/O (missing file, existing output). Errors are one line.

Example:
    datasets/fasta_to_h5.py /usr/share/doc/bowtie2/examples/reference/lambda_virus.fa.gz \\
        -o lambda.h5 --k 3 --d 64 --heads 4 --kv-heads 2 --max-tokens 8192
    mpirun -np 2 build/ringattn run --input lambda.h5 --output lambda_out.h5 --causal

Packed, every record of a multi-record FASTA one sequence:
    datasets/fasta_to_h5.py reads.fa -o reads.h5 --records all --packed
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _h5common as c  # noqa: E402  (first: a clear error without numpy/h5py)
import numpy as np  # noqa: E402

PROG = "fasta_to_h5"
GENERATOR = "ringattn datasets/fasta_to_h5.py"
MAX_K = 12

# Nucleotide byte -> code: A C G T(U) = 0..3, everything else 4 (unknown).
_LUT = np.full(256, 4, dtype=np.uint8)
for _ch, _code in (("A", 0), ("C", 1), ("G", 2), ("T", 3), ("U", 3)):
    _LUT[ord(_ch)] = _code
    _LUT[ord(_ch.lower())] = _code
_STRIP = b" \t\r\n\v\f"


def parse_args(argv):
    p = c.OneLineParser(
        prog="fasta_to_h5.py",
        description=__doc__.split("\n\n")[0] + " See the format below.",
        epilog=__doc__[__doc__.index("Tokens."):],
        formatter_class=c.argparse.RawDescriptionHelpFormatter)
    p.add_argument("fasta", help="FASTA file (.fa, .fna, .fasta; plain or gzip)")
    p.add_argument("--k", type=c.positive_int, default=1,
                   help=f"k-mer length, 1..{MAX_K}: 1 = one token per nucleotide (default %(default)s)")
    p.add_argument("--records", default="0",
                   help="records to use: comma-separated 0-based indices and/or record ids "
                        "(the header's first word), or 'all' (default: the first record)")
    args = c.parse_converter_args(
        p, argv, "packed output: B = 1, each selected record one sequence, their bounds in "
                 "the int64 dataset cu_seqlens [S+1] (use with --records all for every "
                 "record); not with --batch > 1")
    if args.k > MAX_K:
        raise c.Fail(c.EXIT_USAGE, f"--k {args.k}: k is at most {MAX_K}")
    items = [s.strip() for s in args.records.split(",")]
    if any(not s for s in items):
        raise c.Fail(c.EXIT_USAGE, f"--records '{args.records}': an empty item")
    args.record_items = items
    return args


class Selection:
    """Which records --records picks: indices, ids, or all."""

    def __init__(self, items):
        self.all = "all" in items
        if self.all and len(items) > 1:
            raise c.Fail(c.EXIT_USAGE, "--records: 'all' cannot be combined with other items")
        self.indices = {int(s) for s in items if s.isdigit()}
        self.names = {s for s in items if not s.isdigit() and s != "all"}
        self.found_indices, self.found_names = set(), set()

    def picks(self, index, rid):
        hit = self.all or index in self.indices or rid in self.names
        if index in self.indices:
            self.found_indices.add(index)
        if rid in self.names:
            self.found_names.add(rid)
        return hit

    def missing(self):
        return sorted(self.indices - self.found_indices) + sorted(self.names - self.found_names)


def read_records(path, sel, k, tokens_wanted):
    """[(id, sequence bytes)] of the selected records, in file order.

    Stops reading once the records kept give tokens_wanted tokens (None:
    read to the end).
    """
    kept = []
    tokens = 0
    index = -1
    cur = None  # bytearray of the record being kept, or None when skipping
    rid = None
    seen_header = False
    with c.open_maybe_gzip(path) as f:
        for lineno, line in enumerate(f, 1):
            if line.startswith(b">"):
                if cur is not None:
                    kept.append((rid, bytes(cur)))
                    tokens += max(0, len(cur) - k + 1)
                    if tokens_wanted is not None and tokens >= tokens_wanted:
                        cur = None
                        break
                seen_header = True
                index += 1
                words = line[1:].split()
                rid = words[0].decode("utf-8", "replace") if words else f"record{index}"
                cur = bytearray() if sel.picks(index, rid) else None
                continue
            if line.startswith(b";"):
                continue  # old-style comment
            s = line.translate(None, _STRIP)
            if not s:
                continue
            if not seen_header:
                raise c.Fail(c.EXIT_DATA, f"{path}: line {lineno} comes before any '>' header: "
                                          "not a FASTA file")
            if cur is not None:
                cur += s
                if tokens_wanted is not None and tokens + len(cur) - k + 1 >= tokens_wanted:
                    kept.append((rid, bytes(cur)))
                    tokens += len(cur) - k + 1
                    cur = None
                    break
        else:
            if cur is not None:
                kept.append((rid, bytes(cur)))
    if not seen_header:
        raise c.Fail(c.EXIT_DATA, f"{path}: no '>' header: not a FASTA file (or empty)")
    complete_scan = tokens_wanted is None or tokens < tokens_wanted
    if complete_scan and sel.missing():
        miss = ", ".join(str(m) for m in sel.missing())
        raise c.Fail(c.EXIT_DATA, f"{path}: no record {miss} (the file has {index + 1} "
                                  f"record{'s' if index else ''})")
    if not kept:
        raise c.Fail(c.EXIT_DATA, f"{path}: no record selected")
    return kept


def kmer_tokens(seq, k):
    """Token ids of one record (int32, length L-k+1), in O(L) memory."""
    codes = _LUT[np.frombuffer(seq, dtype=np.uint8)]
    if k == 1:
        return codes.astype(np.int32)
    n = len(codes) - k + 1
    bad = codes == 4
    ids = np.zeros(n, dtype=np.int32)
    spoiled = np.zeros(n, dtype=bool)
    clipped = np.minimum(codes, 3).astype(np.int32)
    for j in range(k):
        ids *= 4
        ids += clipped[j:j + n]
        spoiled |= bad[j:j + n]
    ids[spoiled] = 4 ** k
    return ids


def make_embed(k):
    unknown = 4 ** k
    offsets = 4 * np.arange(k, dtype=np.int64)
    divisors = 4 ** np.arange(k - 1, -1, -1, dtype=np.int64)

    def embed(tb, P):
        tb = np.asarray(tb, dtype=np.int64)
        unk = tb == unknown
        digits = (np.where(unk, 0, tb)[:, None] // divisors) % 4  # [n, k]
        e = P[offsets + digits].sum(axis=1)  # [n, D]
        e[unk] = P[4 * k]
        return e

    return embed


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    c.check_source(args.fasta)
    c.check_output(args.output, args.fasta, args.overwrite)
    sel = Selection(args.record_items)
    wanted = None if args.max_tokens is None else args.max_tokens * args.batch
    records = read_records(args.fasta, sel, args.k, wanted)
    parts, lengths, counts = [], [], []
    for rid, seq in records:
        if len(seq) == 0:
            raise c.Fail(c.EXIT_DATA, f"{args.fasta}: record '{rid}' is empty")
        if len(seq) < args.k:
            raise c.Fail(c.EXIT_DATA, f"{args.fasta}: record '{rid}' has {len(seq)} "
                                      f"nucleotides, fewer than --k {args.k}")
        t = kmer_tokens(seq, args.k)
        parts.append(t)
        lengths.append(len(seq))
        counts.append(len(t))
    tokens = np.concatenate(parts)
    attrs = {
        "generator": GENERATOR,
        "records": " ".join(rid for rid, _ in records),
        "record_lengths": np.array(lengths, dtype=np.int64),
        "record_tokens": np.array(counts, dtype=np.int64),
        "k": args.k,
        "alphabet": "A=0 C=1 G=2 T/U=3, other=unknown; k-mer id = sum code_j*4^(k-1-j)",
        "unknown_token": 4 ** args.k,
    }
    c.convert(PROG, args, args.fasta, tokens, make_embed(args.k), 4 * args.k + 1,
              1.0 / np.sqrt(args.k), attrs, counts)
    return 0


if __name__ == "__main__":
    c.run_main(PROG, main)
