#!/usr/bin/env bash
# Installs the Debian packages ringattn needs to build, test and run. Idempotent
# and fast when everything is present: apt-get runs only for what is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  libopenmpi-dev openmpi-bin                 # MPI: the ring's transport
  libhdf5-openmpi-dev hdf5-tools             # parallel HDF5 (MPI-IO) for inputs/outputs
  libxsmm-dev                                # JIT small-GEMM kernels for the tile products
  libcli11-dev libtomlplusplus-dev nlohmann-json3-dev   # CLI, configs, JSON reports
  libzmq3-dev                                # the attention service's messaging (ringattn serve)
  libgtest-dev googletest libbenchmark-dev   # tests and micro-benchmarks
  python3-h5py python3-numpy python3-matplotlib         # dataset scripts and plots
  python3-zmq                                           # the service's Python client (clients/python)
  slurm-wlm slurmctld slurmd slurm-client munge         # tests/launch: a throwaway single-node Slurm
  iproute2 nftables                                     # tests/net: network namespaces, veth, tc; lossy links
  bowtie2-examples golang-github-pierrec-lz4-dev        # real inputs for datasets/ tests: lambda phage, Gutenberg #1661
  clang libclang-rt-14-dev libomp-14-dev                # launch/run_fuzz.sh: libFuzzer (gcc has none), clang's OpenMP
  qemu-user                                            # tests/cli: an emulated AVX2 CPU, to test refusing wider paths
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "install_deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install_deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "install_deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install_deps: done"
