"""Fixtures: one real Prefect server (SQLite, 127.0.0.1) for the test session, and the
environments the CLI tests run ``prolab`` in against it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The server, started on a free port; its environment for subprocesses."""
    from flows.server import LocalServer, server_env, start, stop
    from tasks.processes import free_port

    server = start(LocalServer(tmp_path_factory.mktemp("prefect-home"), free_port()))
    env = server_env(server)
    yield {**os.environ, **env, "PROLAB_PREFECT_HOME": str(server.home), "PROLAB_PREFECT_PORT": str(server.port)}
    stop(server)


@pytest.fixture(scope="module")
def env(prefect_server: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The ``prolab`` command's environment: the session's Prefect server, a store per module."""
    return {**prefect_server, "PROLAB_ARTIFACTS": str(tmp_path_factory.mktemp("store")), "HF_HUB_OFFLINE": "1"}


@pytest.fixture
def cli_env(prefect_server: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The ``prolab`` command's environment: the session's Prefect server, a store per test."""
    return {**prefect_server, "PROLAB_ARTIFACTS": str(tmp_path / "artifacts"), "HF_HUB_OFFLINE": "1"}
