"""The project's local Prefect server: SQLite under ``.prefect/``, on 127.0.0.1 only.

Every ``prolab`` command talks to one pinned API URL, so no command silently starts a
throwaway server (that costs 10-30 s a run and keeps nothing to browse). The server is
started on first use, runs detached, and ``prolab server stop`` ends it; a second start
reuses the same database. Started for a user, it also saves the ``prolab`` Prefect profile
(``flows/prefect_profile.py``), so that the ``prefect`` command can talk to it too.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from flows.prefect_profile import save_profile, user_profiles_file
from tasks import PROJECT_ROOT
from tasks.processes import answers, start_and_wait, stop_group

log = logging.getLogger(__name__)

DEFAULT_PORT = 4200
STARTUP_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class LocalServer:
    home: Path
    port: int

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state_file(self) -> Path:
        return self.home / "server.json"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"


def local_server() -> LocalServer:
    """The server this checkout uses: ``$PROLAB_PREFECT_HOME`` (default ``.prefect/``) and its port."""
    home = Path(os.environ.get("PROLAB_PREFECT_HOME", PROJECT_ROOT / ".prefect")).resolve()
    return LocalServer(home, int(os.environ.get("PROLAB_PREFECT_PORT", DEFAULT_PORT)))


def server_env(server: LocalServer) -> dict[str, str]:
    """The settings every Prefect process of this project runs with."""
    return {
        "PREFECT_HOME": str(server.home),
        "PREFECT_API_URL": server.api_url,
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(server.port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": server.api_url,
        "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
    }


def is_healthy(server: LocalServer, timeout: float = 2.0) -> bool:
    return answers(f"{server.api_url}/health", timeout)


def start(server: LocalServer | None = None, profiles: Path | None = None) -> LocalServer:
    """Start the server detached unless it is already up; return once it answers.

    ``profiles``: the user's Prefect profiles file, whose ``prolab`` profile is pointed at the server.
    """
    server = server or local_server()
    if profiles is not None:
        save_profile(server.api_url, profiles)
    if is_healthy(server):
        return server
    process = start_and_wait(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(server.port),
         "--analytics-off"],
        "Prefect server", lambda: is_healthy(server), STARTUP_TIMEOUT_S, log_file=server.log_file,
        env={**os.environ, **server_env(server)}, detached=True,
    )
    server.state_file.write_text(json.dumps({"pid": process.pid, "port": server.port}))
    log.info("Prefect server at %s (UI %s); `prolab server stop` stops it", server.api_url, server.ui_url)
    return server


def stop(server: LocalServer | None = None) -> bool:
    """Stop the server (and its process group) if this checkout started it."""
    server = server or local_server()
    if not server.state_file.is_file():
        return False
    stop_group(json.loads(server.state_file.read_text())["pid"])
    server.state_file.unlink(missing_ok=True)
    return True


def use_local_server() -> LocalServer | None:
    """Pin this process to the project's server, starting it when needed.

    A ``PREFECT_API_URL`` already set (a team server, Prefect Cloud) is respected.
    """
    if os.environ.get("PREFECT_API_URL"):
        return None
    server = start(profiles=user_profiles_file(os.environ))  # before PREFECT_HOME is pinned below
    os.environ.update(server_env(server))
    return server
