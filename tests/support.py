"""Helpers shared by the tests: where ../shared is, and a clean skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PROLAB_SHARED", PROJECT_ROOT.parent / "shared"))


def shared_path(relative: str) -> Path:
    """A file under ../shared, or a clean skip naming what is absent."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"{path} is absent: the tests that use ../shared need it beside the project")
    return path
