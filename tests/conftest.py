"""Session-wide fixtures: paths to ../shared and a fresh artifact store per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PROLAB_SHARED", PROJECT_ROOT.parent / "shared"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def shared_path(relative: str) -> Path:
    """A file under ../shared, or a clean skip naming what is absent."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"{path} is absent: the tests that use ../shared need it beside the project")
    return path


@pytest.fixture
def artifacts_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "artifacts"
    monkeypatch.setenv("PROLAB_ARTIFACTS", str(root))
    return root
