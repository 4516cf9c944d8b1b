#!/usr/bin/env bash
# What attended to what, on real data: the lambda phage genome (one token per
# base) and Project Gutenberg #1661 (The Adventures of Sherlock Holmes, as
# lower-cased words). Each is converted, run causal with lse on P ranks, and
# then `ringattn weights` (on the same P ranks) writes the exact weights of
# the rows of one token: every T of the genome (top 16 keys each) and a
# block of 48 bases (full rows, for a heatmap); every "holmes" of the book
# (top 16 keys each). plot_weights.py draws a row of each and the heatmap,
# PNG and PDF. The q, k, v are the converters' seeded projections, not a
# model's: the example shows the path and the files, not learned attention
# (datasets/project_to_h5.py brings a model's own).
#
#   datasets/weights_example.sh OUT_DIR [RINGATTN] [P]
#
# RINGATTN: the binary (default: ringattn on PATH); P: ranks (default 2).
# Inputs from Debian packages: bowtie2-examples (lambda_virus.fa.gz) and
# golang-github-pierrec-lz4-dev (pg1661.txt), or LAMBDA and PG1661; Python:
# PYTHON (default /usr/bin/python3, with h5py, numpy and matplotlib);
# launcher: MPIEXEC (default mpirun) and MPIEXEC_FLAGS. The first 8192 bases
# and 20000 words keep it to about a minute on 2 cores.
set -euo pipefail
out=$1
bin=${2:-ringattn}
np=${3:-2}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=${PYTHON:-/usr/bin/python3}
lambda=${LAMBDA:-/usr/share/doc/bowtie2/examples/reference/lambda_virus.fa.gz}
book=${PG1661:-/usr/share/gocode/src/github.com/pierrec/lz4/testdata/pg1661.txt}
read -r -a mpi_flags <<<"${MPIEXEC_FLAGS:-}"
mpi() { "${MPIEXEC:-mpirun}" -n "$np" "${mpi_flags[@]}" "$@"; }
for f in "$lambda" "$book"; do
  [[ -r $f ]] || { echo "weights_example.sh: $f is missing (see the header)" >&2; exit 2; }
done
mkdir -p "$out"
cd "$out"

# The genome: T is token 3 (fasta_to_h5.py --help: A=0 C=1 G=2 T=3).
"$py" "$here/fasta_to_h5.py" "$lambda" -o genome.h5 --k 1 --d 64 --heads 2 --max-tokens 8192 \
  --overwrite
mpi "$bin" run --input genome.h5 --output genome_out.h5 --causal --lse --overwrite --progress none
mpi "$bin" weights --input genome.h5 --output genome_out.h5 --rows token=3 --top-k 16 \
  --to genome_T.h5 --overwrite
mpi "$bin" weights --input genome.h5 --output genome_out.h5 --rows 4096:4144 --heads 0 \
  --to genome_block.h5 --overwrite
first_t=$("$py" -c 'import h5py; print(int(h5py.File("genome_T.h5")["rows"][0]))')
"$py" "$here/plot_weights.py" genome_T.h5 --out genome_T --row "$first_t"
"$py" "$here/plot_weights.py" genome_block.h5 --out genome_block --row 4100 --heatmap \
  --keys 4000:4144

# The book: a word's id is text_to_h5.py's hash of it (its --help).
"$py" "$here/text_to_h5.py" "$book" -o book.h5 --tokens words --lowercase --max-tokens 20000 \
  --d 64 --heads 4 --kv-heads 2 --overwrite
holmes=$("$py" -c 'import hashlib
print(int.from_bytes(hashlib.blake2b(b"holmes", digest_size=8).digest(), "little") & (2**63 - 1))')
mpi "$bin" run --input book.h5 --output book_out.h5 --causal --lse --overwrite --progress none
mpi "$bin" weights --input book.h5 --output book_out.h5 --rows "token=$holmes" --top-k 16 \
  --to book_holmes.h5 --overwrite
last_holmes=$("$py" -c 'import h5py; print(int(h5py.File("book_holmes.h5")["rows"][-1]))')
"$py" "$here/plot_weights.py" book_holmes.h5 --out book_holmes --row "$last_holmes" --head 1
plots=(./*.png ./*.pdf)
echo "weights_example.sh: wrote ${#plots[@]} plots in $PWD"
