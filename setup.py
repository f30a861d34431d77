"""Builds the native core pycomm._C from csrc/.

One set of compiler flags for every file: per-ISA kernels select their
instruction set with `#pragma GCC target` inside the file and are chosen at run
time, so the wheel runs on any x86-64 (no -march=native).
"""
import glob
import os

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

# Compile the sources in parallel (PYCOMM_BUILD_JOBS=N; default: all cores).
ParallelCompile("PYCOMM_BUILD_JOBS", default=0).install()


def native_sources():
    files = glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True)
    return sorted(f for f in files if os.sep + "cuda" + os.sep not in f)


ext = Pybind11Extension(
    "pycomm._C",
    native_sources(),
    # Any header change rebuilds every source: coarse, but never a stale object.
    depends=sorted(glob.glob(os.path.join("csrc", "**", "*.h"), recursive=True)),
    include_dirs=["csrc"],
    cxx_std=17,
    extra_compile_args=["-O3", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fno-strict-aliasing"],
    libraries=["rt"],
)

setup(ext_modules=[ext], cmdclass={"build_ext": build_ext})
