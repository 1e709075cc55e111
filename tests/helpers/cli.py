"""The ``prolab`` command run as a user runs it (to the end, or killed on a marker), and where
the project's files and ../shared are (a clean skip when ../shared is absent)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("PROLAB_SHARED", PROJECT_ROOT.parent / "shared"))
PROLAB = str(PROJECT_ROOT / ".venv" / "bin" / "prolab")
CITYSCAPES = "data/prolab_descriptors/cityscapes_bdd_gpt3.5.json"


def prolab(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``prolab *args`` from the project root with ``env``; output captured as text."""
    return subprocess.run([PROLAB, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=PROJECT_ROOT)


def prolab_in_process(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """What ``prolab(env, *args)`` returns, from the command's ``main`` run in this process.

    Only for input the command refuses before it connects to Prefect: the same parser, checks,
    messages and exit codes, without a process start (~2 s for a command refused this early). A
    case that gets as far as connecting fails here (run it with ``prolab`` or
    ``prolab_connected_in_process``); an error the command does not handle propagates, as its
    traceback would have been printed. Log records go to the returned stderr, as they would to
    the process's.
    """
    def connecting(_args: object) -> None:
        raise AssertionError(f"prolab {' '.join(args)} got as far as a flow run: run it with prolab()")

    with mock.patch("flows.cli._connect", connecting):
        return _main_here(env, args)


def prolab_connected_in_process(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """What ``prolab(env, *args)`` returns, from the command's ``main`` run in this process against
    the Prefect server ``env`` pins: its flow runs in this process, as the ``prolab`` process runs
    it in its own, without the process's ~8 s of imports.

    Prefect reads its settings once per process, so they are pinned here for the call; the flow
    run's logs stay local (shipped in the background, they could outlive the session's server).
    Prefect's console lines land in the returned stderr with the tracebacks of failed tasks, which
    a ``prolab`` process filters out: a case about what stderr lacks runs as a process.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"], PREFECT_LOGGING_TO_API_ENABLED: False}):
        return _main_here(env, args)


def _main_here(env: dict[str, str], args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """``flows.cli.main(args)`` with ``env`` as the environment, from the project root, its output
    and log records captured."""
    from flows.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(stderr)
    logging.getLogger().addHandler(handler)
    try:
        with (mock.patch.dict(os.environ, env, clear=True), contextlib.chdir(PROJECT_ROOT),
              contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr)):
            try:
                code = main(list(args))
            except SystemExit as exit_:  # argparse's usage errors
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        logging.getLogger().removeHandler(handler)
    return subprocess.CompletedProcess([PROLAB, *args], code, stdout.getvalue(), stderr.getvalue())


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
