# Spack recipe for ringattn (docs/install.md). Use it from a repository of
# your own:
#   spack repo create ~/spack-ringattn && \
#     cp -r packaging/spack/ringattn ~/spack-ringattn/packages/ && \
#     spack repo add ~/spack-ringattn
#   spack install ringattn ^openmpi
from spack.package import *


class Ringattn(CMakePackage):
    """Exact attention over sequences split across MPI ranks: a ring of
    key/value blocks (MPI or NCCL), a fused CPU (or CUDA) kernel per rank,
    inputs and outputs streamed through parallel HDF5."""

    homepage = "https://example.org/ringattn"  # SITE: where your copy lives
    git = "https://example.org/ringattn.git"  # SITE

    license("Apache-2.0")

    version("main", branch="main")
    version("0.1.0", tag="v0.1.0")

    variant("cuda", default=False, description="Build the CUDA kernel and the NCCL transport")
    variant("libxsmm", default=True,
            description="JIT tile products (off: portable loops, correct but slower)")
    variant("tests", default=False, description="Build the GoogleTest suites")

    depends_on("cmake@3.24:", type="build")
    depends_on("cxx", type="build")
    depends_on("c", type="build")
    depends_on("mpi")
    depends_on("hdf5@1.10:+mpi")
    depends_on("libxsmm@1.17:", when="+libxsmm")
    depends_on("cli11@2:", type="build")
    depends_on("nlohmann-json@3:")
    depends_on("tomlplusplus@3:")
    depends_on("libzmq@4:")
    depends_on("googletest@1.12:", type=("build", "test"), when="+tests")
    depends_on("cuda@12:", when="+cuda")
    depends_on("nccl@2.18:", when="+cuda")
    depends_on("py-h5py", type="run")
    depends_on("py-numpy", type="run")

    conflicts("%gcc@:11", msg="ringattn needs C++20 (gcc 12 or newer)")

    def cmake_args(self):
        return [
            self.define("RINGATTN_CUDA", "ON" if self.spec.satisfies("+cuda") else "OFF"),
            self.define_from_variant("RINGATTN_USE_LIBXSMM", "libxsmm"),
            self.define_from_variant("RINGATTN_TESTS", "tests"),
            self.define("RINGATTN_BENCH", False),
        ]
