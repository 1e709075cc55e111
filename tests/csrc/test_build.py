"""The build entry point: when it compiles the CUDA kernel, that a second run is a no-op, and that
two at once compile once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from csrc.build import AVX2_FLAGS, CXX_FLAGS, build, current_cuda_plan, cxx_flags, main, plan_cuda
from csrc.extension import ExtensionInfo


@pytest.mark.parametrize(
    ("torch_cuda", "nvcc", "gpu", "env", "expected", "reason"),
    [
        ("12.8", "13.0", True, None, False, "nvcc 13.0 does not match torch's CUDA 12.8"),
        ("12.8", "13.0", False, "1", False, "nvcc 13.0 does not match torch's CUDA 12.8"),
        ("12.8", "12.8", True, None, True, "a GPU is visible"),
        ("12.8", "12.8", False, None, False, "no GPU visible"),
        ("12.8", "12.8", False, "1", True, "PROLAB_BUILD_CUDA=1"),
        ("12.8", "12.8", True, "0", False, "PROLAB_BUILD_CUDA=0"),
        (None, "12.8", False, "1", False, "CPU-only build"),
        ("12.8", None, True, None, False, "no CUDA toolkit"),
    ],
)
def test_plan_cuda(
    torch_cuda: str | None, nvcc: str | None, gpu: bool, env: str | None, expected: bool, reason: str
) -> None:
    plan = plan_cuda(torch_cuda, nvcc, gpu, env)
    assert plan.build is expected
    assert reason in plan.reason


@pytest.mark.parametrize(("capability", "avx2"), [("AVX512", True), ("AVX2", True), ("DEFAULT", False)])
def test_vector_flags_follow_the_cpu_capability(capability: str, avx2: bool) -> None:
    assert cxx_flags(capability) == CXX_FLAGS + (AVX2_FLAGS if avx2 else ())


def test_second_build_is_a_fast_no_op(extension: ExtensionInfo) -> None:
    start = time.perf_counter()
    result = build()
    assert not result.rebuilt
    assert time.perf_counter() - start < 5
    assert result.stamp.torch_version == torch.__version__
    assert result.stamp.cuda == current_cuda_plan().build == extension.cuda


def test_main_says_what_it_built_and_why(extension: ExtensionInfo, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "up to date" in out
    assert ("CPU + CUDA" if extension.cuda else "CPU only") in out
    assert current_cuda_plan().reason in out


def test_two_builds_at_once_compile_once(csrc_copy: Path) -> None:
    """Two processes building a checkout that has no library (two pytest workers, two users):
    one compiles, the other waits for it and finds its stamp current."""
    env = {**os.environ, "PROLAB_BUILD_CUDA": "0"}
    builds = [subprocess.Popen([sys.executable, "-m", "csrc.build"], cwd=csrc_copy.parent, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [build.communicate(timeout=600)[0] for build in builds]
    assert [build.returncode for build in builds] == [0, 0], outputs
    assert sorted("built in" in out for out in outputs) == [False, True], outputs
    assert any("up to date" in out for out in outputs) and str(csrc_copy) in outputs[0], outputs
