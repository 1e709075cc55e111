"""Fixtures: the MSDA extension, built once per session so that the kernels, not the fallback, are
tested; a copy of the package to build or load elsewhere."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import csrc
from csrc.build import build
from csrc.extension import CSRC_DIR, SOURCES, ExtensionInfo


@pytest.fixture(scope="session")
def extension() -> ExtensionInfo:
    """Build (a no-op when the stamp is current) and load the library, or skip without a compiler."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        pytest.skip(f"no C++ compiler ({compiler}) to build the MSDA extension")
    build()
    info = csrc.load_extension()
    if not info.loaded:
        pytest.fail(f"the MSDA extension was built but cannot be loaded: {info.detail}")
    return info


@pytest.fixture
def csrc_copy(tmp_path: Path) -> Path:
    """The Python package and the C++ sources under ``tmp_path/csrc``, with no library and no stamp."""
    copy = tmp_path / "csrc"
    copy.mkdir()
    for path in [*CSRC_DIR.glob("*.py"), *(CSRC_DIR / name for name in SOURCES)]:
        shutil.copy(path, copy)
    return copy
