"""What this pycomm build has and what it finds here: ``python -m pycomm.info``.

One item a line: version, CPU kernels' instruction set, compiler, CUDA (built,
architectures, runtime and driver versions, GPUs), the MPI transport, and the
optional packages.
"""
import importlib.metadata
import os
import platform
import sys


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cuda_version(v):
    return f"{v // 1000}.{v % 1000 // 10}"


def lines():
    import pycomm
    from pycomm import _C

    info = _C.build_info()
    cuda = _C.cuda
    out = [
        f"pycomm: {pycomm.__version__} ({os.path.dirname(pycomm.__file__)})",
        f"python: {platform.python_version()} ({sys.executable})",
        f"c++ compiler: {info['compiler']}",
        f"cpu isa: {info['isa']} (best supported: {info['best_isa']})",
    ]
    if info["cuda"]:
        out.append(f"cuda: built for {', '.join(info['cuda_archs'])} "
                   f"(runtime {_cuda_version(cuda.runtime_version())}, linked statically)")
        driver = cuda.driver_version()
        out.append(f"cuda driver: {_cuda_version(driver) if driver else 'none'}")
        n = cuda.device_count()
        out.append(f"gpus: {n}" + ("" if n else f" ({cuda.no_device_reason()})"))
        out += [f"gpu {i}: {cuda.device_name(i)}" for i in range(n)]
    else:
        out.append("cuda: not built (CPU only)")
    from pycomm.mpi import transport_available

    ok, detail = transport_available()
    out.append(f"mpi transport: built against {detail.split(',')[0]}" if ok else f"mpi transport: {detail}")
    for package in ("numpy", "torch", "mpi4py"):
        out.append(f"{package}: {_version(package) or 'not installed'}")
    return out


def main():
    print("\n".join(lines()))


if __name__ == "__main__":
    main()
