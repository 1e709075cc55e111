"""Shared by the reliability tests: the CLI as a user runs it, killed on a marker, and store checks.

Every test gets its own store (``PROLAB_ARTIFACTS``) and talks to the session's Prefect
server (``prefect_server`` in tests/conftest.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tasks.files import MANIFEST
from tasks.store import TMP_PREFIX, ArtifactStore
from tests.support import PROJECT_ROOT, PROLAB, last_line, prolab  # noqa: F401  (re-exported to the reliability tests)

CITYSCAPES = "data/prolab_descriptors/cityscapes_bdd_gpt3.5.json"


def kill_when(env: dict[str, str], marker: Callable[[], bool], *args: str, timeout: float = 300,
              log: Path | None = None) -> str:
    """Start ``prolab *args`` in its own process group; SIGKILL the group once ``marker()`` holds.

    Returns the process's stderr. Fails when the process ends before the marker appears
    (the kill would not have interrupted anything) or the marker never appears.
    """
    log = log or Path(env["PROLAB_ARTIFACTS"]).parent / f"killed-{time.monotonic_ns()}.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen([PROLAB, *args], env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                   cwd=PROJECT_ROOT, start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while not marker():
                assert process.poll() is None, f"prolab ended before the marker:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"no marker within {timeout} s:\n{log.read_text()[-3000:]}"
                time.sleep(0.05)
        finally:
            with_group_killed(process)
    return log.read_text()


def with_group_killed(process: subprocess.Popen) -> None:
    """SIGKILL the process group led by ``process`` and reap the leader."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(30)


def stray_temporaries(root: Path) -> list[Path]:
    """Temporary artifact directories still under the store's stage directories."""
    return sorted(p for p in root.glob(f"*/{TMP_PREFIX}*"))


def assert_store_sound(root: Path, allow_temporaries: bool = True) -> dict[str, list[str]]:
    """Every artifact matches its manifest; no temporary became an artifact. Returns stage -> keys."""
    store = ArtifactStore(root)
    assert store.verify() == {}
    found: dict[str, list[str]] = {}
    for directory in store.iter_artifacts():
        assert (directory / MANIFEST).is_file() and not directory.name.startswith(TMP_PREFIX)
        found.setdefault(directory.parent.name, []).append(directory.name)
    if not allow_temporaries:
        assert stray_temporaries(root) == []
    return found


@pytest.fixture
def cli_env(prefect_server: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The CLI's environment: the session's Prefect server, a fresh store, offline models."""
    return {**prefect_server, "PROLAB_ARTIFACTS": str(tmp_path / "artifacts"), "HF_HUB_OFFLINE": "1"}
