"""Processes that serve something: started with their output in a log, waited for until they
answer, stopped in two steps (SIGTERM, then SIGKILL after a grace period).

One helper for the project's three servers: the Prefect server and worker (flows/), which run
detached in a session of their own so that they outlive the command that started them, and the
LLM server (tasks/label_space/llm_server.py), a child stopped when its block ends. A process that exits or
stays silent while it starts is stopped, and the error quotes the end of its output.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from tasks.errors import ProLabError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
POLL_S = 0.25
STOP_GRACE_S = 10.0
OUTPUT_TAIL_CHARS = 3000
# Straight to the address asked: a configured HTTP proxy must not see requests to 127.0.0.1.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ProcessStartError(ProLabError, RuntimeError):
    """A process exited, or did not answer in time, while starting; the message quotes its output."""


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def answers(url: str, timeout: float = 2.0) -> bool:
    """Whether ``url`` answers a GET with 200 (no proxy in between)."""
    with contextlib.suppress(urllib.error.URLError, OSError):
        with _DIRECT.open(url, timeout=timeout) as reply:
            return reply.status == 200
    return False


def _tail(output: IO[bytes]) -> str:
    output.flush()
    output.seek(0, os.SEEK_END)
    output.seek(max(0, output.tell() - OUTPUT_TAIL_CHARS))
    return output.read().decode("utf-8", errors="replace").strip()


def start_and_wait(
    command: Sequence[str],
    name: str,
    ready: Callable[[], bool],
    timeout_s: float,
    log_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    detached: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``command`` and return it once ``ready()`` holds.

    stdin is closed; stdout and stderr go to ``log_file`` (appended), or to a temporary file
    when there is none. ``detached`` starts it in a session of its own: it outlives this
    process and Ctrl-C here, and stopping it stops its whole process group. If it exits, does
    not answer within ``timeout_s``, or the wait is interrupted, it is stopped and
    ``ProcessStartError`` (for a failure) names ``name`` and quotes the end of its output.
    """
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
    where = f" (log {log_file})" if log_file is not None else ""
    with open(log_file, "a+b") if log_file is not None else tempfile.TemporaryFile() as output:
        process = subprocess.Popen(list(command), env=None if env is None else dict(env), cwd=cwd,
                                   stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=detached)
        try:
            started = time.monotonic()
            while not ready():
                if process.poll() is not None:
                    raise ProcessStartError(f"the {name} exited with status {process.returncode} before "
                                            f"answering{where}; its output ends with:\n{_tail(output)}")
                if time.monotonic() - started > timeout_s:
                    raise ProcessStartError(f"the {name} did not answer within {timeout_s:.0f} s{where}; "
                                            f"its output ends with:\n{_tail(output)}")
                time.sleep(POLL_S)
        except BaseException:
            if detached:
                stop_group(process.pid)
            else:
                stop(process)
            raise
    log.debug("%s (pid %d) answered after %.1f s", name, process.pid, time.monotonic() - started)
    return process


def stop(process: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> int:
    """Stop a child: SIGTERM, then SIGKILL if it has not exited after ``grace_s``; its exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def stop_group(pid: int, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL it if it has not ended after ``grace_s``."""
    try:
        os.killpg(pid, signal.SIGTERM)
        if not wait_group_gone(pid, grace_s):
            os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_group_gone(pid: int, seconds: float) -> bool:
    """Whether the process group led by ``pid`` ended within ``seconds``. A leader started by
    this process is reaped, or it would linger as a zombie and look alive."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False
