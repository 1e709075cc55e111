"""Which library may be loaded (the build stamp), and the fallback to the reference when none can."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from csrc.extension import BuildStamp, sources_digest, stale_reason


@pytest.fixture
def current_stamp(csrc_copy: Path) -> BuildStamp:
    (csrc_copy / "_prolab_ops.so").write_bytes(b"")
    return BuildStamp(
        torch_version=torch.__version__,
        sources_digest=sources_digest(csrc_copy),
        flags=("cxx -O3",),
        cuda=False,
        cuda_reason="no GPU visible",
        library="_prolab_ops.so",
    )


def test_stamp_round_trips(csrc_copy: Path, current_stamp: BuildStamp) -> None:
    current_stamp.write(csrc_copy)
    assert BuildStamp.read(csrc_copy) == current_stamp


def test_unreadable_stamp_reads_as_none(csrc_copy: Path) -> None:
    BuildStamp.path(csrc_copy).parent.mkdir()
    BuildStamp.path(csrc_copy).write_text("{not json")
    assert BuildStamp.read(csrc_copy) is None


def test_current_stamp_is_usable(csrc_copy: Path, current_stamp: BuildStamp) -> None:
    assert stale_reason(current_stamp, csrc_copy) is None


def test_stale_reasons(csrc_copy: Path, current_stamp: BuildStamp) -> None:
    assert "not built" in str(stale_reason(None, csrc_copy))
    other_torch = dataclasses.replace(current_stamp, torch_version="1.0.0")
    assert "built for torch 1.0.0" in str(stale_reason(other_torch, csrc_copy))
    (csrc_copy / "_prolab_ops.so").unlink()
    assert "_prolab_ops.so is missing" in str(stale_reason(current_stamp, csrc_copy))
    with (csrc_copy / "msda.cpp").open("a") as source:
        source.write("// edited\n")
    assert "sources changed" in str(stale_reason(current_stamp, csrc_copy))


def test_avx2_library_is_refused_on_a_cpu_without_avx2(
    csrc_copy: Path, current_stamp: BuildStamp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading it there would end the process with SIGILL at the first vector instruction."""
    avx2 = dataclasses.replace(current_stamp, flags=("cxx -O3 -mavx2 -mfma",))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert stale_reason(avx2, csrc_copy) is None
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert "AVX2" in str(stale_reason(avx2, csrc_copy))
    assert stale_reason(current_stamp, csrc_copy) is None


def test_unbuilt_package_falls_back_to_the_reference_with_one_warning(csrc_copy: Path) -> None:
    script = textwrap.dedent(
        """
        import torch
        import csrc
        from csrc.testing import random_inputs

        assert csrc.__file__.startswith({root!r}), csrc.__file__
        assert not csrc.extension_info().loaded
        inputs = random_inputs(2, [(4, 5), (2, 2)], 3, 2, 3, 2, location_range=(-0.1, 1.1))
        for _ in range(2):
            assert torch.equal(csrc.ms_deform_attn(*inputs), csrc.ms_deform_attn_reference(*inputs))
        print("reason:", csrc.extension_info().detail)
        """
    ).format(root=str(csrc_copy))
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=csrc_copy.parent, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert "reason: not built (run `python -m csrc.build`)" in run.stdout
    warnings = [line for line in run.stderr.splitlines() if "using the PyTorch reference" in line]
    assert warnings == [
        "MSDA extension unavailable: not built (run `python -m csrc.build`); using the PyTorch reference"
    ]
