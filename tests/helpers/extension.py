"""Fixture: the MSDA extension, built once per session so that the kernels, not the fallback, are tested."""

from __future__ import annotations

import os
import shutil

import pytest

import csrc
from csrc.build import build
from csrc.extension import ExtensionInfo


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
