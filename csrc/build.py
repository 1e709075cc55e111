"""Ahead-of-time build of the ops extension: ``python -m csrc.build [--force]``.

Compiles the CPU sources (``msda.cpp``, ``property_cosine.cpp``; always) and
``msda_cuda.cu`` (when a CUDA toolkit matching torch's CUDA is usable) into one shared
library in ``csrc/``, with objects under ``csrc/build/``.
A stamp records the torch version, a digest of the sources, the flags and what was built,
so a second run with nothing changed returns at once.

Environment: ``PROLAB_BUILD_CUDA=1`` builds the CUDA kernel without a visible GPU (set
``TORCH_CUDA_ARCH_LIST`` then, e.g. "9.0"), ``PROLAB_BUILD_CUDA=0`` never builds it;
``MAX_JOBS`` (default 2) bounds parallel compile jobs.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock

from csrc.extension import BUILD_DIRNAME, CSRC_DIR, BuildStamp, sources_digest, stale_reason

LIBRARY_NAME = "_prolab_ops"
CPU_SOURCES = ("msda.cpp", "property_cosine.cpp")
CUDA_SOURCES = ("msda_cuda.cu",)
CXX_FLAGS = ("-O3", "-fopenmp")  # ATen's parallel_for is OpenMP inlined into our code
# ATen's Vectorized<T> is AVX2 (with Sleef's exp from libtorch_cpu) only when compiled for
# it; without these flags it is a portable loop of scalars. Added when torch itself runs
# its AVX2 or AVX-512 kernels on this CPU, since the library is built where it runs.
AVX2_FLAGS = ("-mavx2", "-mfma", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2")
NVCC_FLAGS = ("-O3",)
LINK_FLAGS = ("-fopenmp",)  # resolves to the libgomp torch has already loaded


@dataclass(frozen=True)
class CudaPlan:
    """Whether to compile the CUDA kernel, and the reason to print."""

    build: bool
    reason: str


@dataclass(frozen=True)
class BuildResult:
    stamp: BuildStamp
    rebuilt: bool
    seconds: float


def _major_minor(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2])


def plan_cuda(
    torch_cuda: str | None, nvcc_version: str | None, cuda_available: bool, request: str | None
) -> CudaPlan:
    """Build the CUDA kernel only with an nvcc of torch's own CUDA major.minor (another one
    compiles against mismatched headers and runtime), and only where a GPU will run it
    unless ``request`` (PROLAB_BUILD_CUDA) is "1"; "0" turns it off."""
    if request == "0":
        return CudaPlan(False, "PROLAB_BUILD_CUDA=0")
    if torch_cuda is None:
        return CudaPlan(False, "torch is a CPU-only build")
    if nvcc_version is None:
        return CudaPlan(False, "no CUDA toolkit (nvcc) found")
    if _major_minor(nvcc_version) != _major_minor(torch_cuda):
        return CudaPlan(False, f"nvcc {nvcc_version} does not match torch's CUDA {torch_cuda}")
    if cuda_available:
        return CudaPlan(True, f"nvcc {nvcc_version} matches torch's CUDA {torch_cuda} and a GPU is visible")
    if request == "1":
        return CudaPlan(True, f"nvcc {nvcc_version} matches torch's CUDA {torch_cuda}; PROLAB_BUILD_CUDA=1")
    return CudaPlan(False, "no GPU visible (PROLAB_BUILD_CUDA=1 builds the CUDA kernel anyway)")


def nvcc_version() -> str | None:
    """major.minor of the nvcc that torch.utils.cpp_extension would use, or None."""
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None:
        return None
    try:
        banner = subprocess.run(
            [str(Path(CUDA_HOME) / "bin" / "nvcc"), "--version"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    match = re.search(r"release (\d+\.\d+)", banner)
    return match.group(1) if match else None


def current_cuda_plan() -> CudaPlan:
    return plan_cuda(
        torch.version.cuda, nvcc_version(), torch.cuda.is_available(), os.environ.get("PROLAB_BUILD_CUDA")
    )


def cxx_flags(cpu_capability: str | None = None) -> tuple[str, ...]:
    """The C++ flags for this CPU: AVX2 vector code where torch runs AVX2 or AVX-512 kernels."""
    capability = cpu_capability or torch.backends.cpu.get_cpu_capability()
    return CXX_FLAGS + (AVX2_FLAGS if capability in ("AVX2", "AVX512") else ())


def _flags(plan: CudaPlan) -> tuple[str, ...]:
    """The compile and link flags as recorded in the stamp: changing them forces a rebuild."""
    flags = [f"cxx {' '.join(cxx_flags())}", f"link {' '.join(LINK_FLAGS)}"]
    if plan.build:
        flags.append(f"nvcc {' '.join(NVCC_FLAGS)}")
    return tuple(flags)


def _compile(plan: CudaPlan) -> Path:
    """Run setuptools' build_ext with torch's BuildExtension (ninja, MAX_JOBS) and return the library."""
    from setuptools import Distribution
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    os.environ.setdefault("MAX_JOBS", "2")
    name = f"{CSRC_DIR.name}.{LIBRARY_NAME}"
    cpu_sources = [str(CSRC_DIR / source) for source in CPU_SOURCES]
    if plan.build:
        extension = CUDAExtension(
            name,
            cpu_sources + [str(CSRC_DIR / source) for source in CUDA_SOURCES],
            extra_compile_args={"cxx": list(cxx_flags()), "nvcc": list(NVCC_FLAGS)},
            extra_link_args=list(LINK_FLAGS),
        )
    else:
        extension = CppExtension(
            name, cpu_sources, extra_compile_args={"cxx": list(cxx_flags())}, extra_link_args=list(LINK_FLAGS)
        )
    # A bare Distribution: setup() would read the project's pyproject.toml.
    distribution = Distribution(
        {"name": LIBRARY_NAME, "ext_modules": [extension], "cmdclass": {"build_ext": BuildExtension}}
    )
    command = distribution.get_command_obj("build_ext")
    command.build_lib = str(CSRC_DIR.parent)
    command.build_temp = str(CSRC_DIR / BUILD_DIRNAME / "temp")
    command.force = True  # the stamp, not file times, decides whether to build
    distribution.run_command("build_ext")
    return Path(command.get_ext_fullpath(name))


def build(force: bool = False) -> BuildResult:
    """Build unless the stamp shows a library from these sources, flags, torch and CUDA plan.

    Under the checkout's build lock: two processes finding the stamp stale (two pytest workers
    after a source edit) would both compile and write the same library; the second waits and
    finds the first's stamp current."""
    lock = CSRC_DIR / BUILD_DIRNAME / ".lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock):
        return _build(force)


def _build(force: bool) -> BuildResult:
    start = time.perf_counter()
    plan = current_cuda_plan()
    stamp = BuildStamp.read()
    if (
        not force
        and stamp is not None
        and stale_reason(stamp) is None
        and stamp.cuda == plan.build
        and stamp.flags == _flags(plan)
    ):
        return BuildResult(stamp, False, time.perf_counter() - start)
    BuildStamp.path().unlink(missing_ok=True)
    library = _compile(plan)
    stamp = BuildStamp(
        torch_version=torch.__version__,
        sources_digest=sources_digest(),
        flags=_flags(plan),
        cuda=plan.build,
        cuda_reason=plan.reason,
        library=library.name,
    )
    stamp.write()
    return BuildResult(stamp, True, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m csrc.build", description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the stamp says the library is current")
    args = parser.parse_args(argv)
    result = build(force=args.force)
    kernels = "CPU + CUDA" if result.stamp.cuda else "CPU only"
    action = f"built in {result.seconds:.1f}s" if result.rebuilt else "up to date, nothing to do"
    print(f"prolab ops extension: {kernels} ({action}) -> {CSRC_DIR / result.stamp.library}")
    print(f"prolab ops extension: CUDA kernels {'built' if result.stamp.cuda else 'skipped'}: {result.stamp.cuda_reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
