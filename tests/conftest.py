"""Session-wide settings: offline model loading, no analytics, a fresh artifact store per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture
def artifacts_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "artifacts"
    monkeypatch.setenv("PROLAB_ARTIFACTS", str(root))
    return root


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory):
    """One real Prefect server (SQLite, 127.0.0.1) for the test session; its env for subprocesses."""
    import socket

    from flows.server import LocalServer, server_env, start, stop

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = start(LocalServer(tmp_path_factory.mktemp("prefect-home"), port))
    env = server_env(server)
    yield {**os.environ, **env, "PROLAB_PREFECT_HOME": str(server.home), "PROLAB_PREFECT_PORT": str(port)}
    stop(server)
