"""Helpers shared by the tests: where ../shared is (a clean skip when it is absent), and the
``prolab`` command run as a user runs it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PROLAB_SHARED", PROJECT_ROOT.parent / "shared"))
PROLAB = str(PROJECT_ROOT / ".venv" / "bin" / "prolab")


def prolab(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``prolab *args`` from the project root with ``env``; output captured as text."""
    return subprocess.run([PROLAB, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=PROJECT_ROOT)


def last_line(result: subprocess.CompletedProcess[str]) -> Path:
    """The artifact directory a successful command prints last (its stderr shown on failure)."""
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1])


def shared_path(relative: str) -> Path:
    """A file under ../shared, or a clean skip naming what is absent."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"{path} is absent: the tests that use ../shared need it beside the project")
    return path
