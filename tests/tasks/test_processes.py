"""Starting a process that serves something and waiting until it answers, with real processes:
Python's own HTTP server, and scripts that crash, stay silent, or start children."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from tasks.processes import ProcessStartError, answers, free_port, start_and_wait, stop, stop_group

# Servers that never answer: each prints its pid (and its child's), then sleeps.
SILENT = "import os, time; print('loading', os.getpid(), flush=True); time.sleep(60)"
SILENT_WITH_A_CHILD = ("import os, subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', "
                       "'import time; time.sleep(60)']); print('loading', os.getpid(), child.pid, flush=True); "
                       "time.sleep(60)")


def _http_server(port: int) -> list[str]:
    return [sys.executable, "-u", "-m", "http.server", str(port), "--bind", "127.0.0.1"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _pids_printed(log: Path) -> list[int]:
    deadline = time.monotonic() + 10
    while "loading" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return [int(word) for word in log.read_text().split("loading", 1)[1].split()]


def test_a_server_is_returned_once_it_answers_with_its_output_appended_to_the_log(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "logs" / "server.log"
    log.parent.mkdir()
    log.write_text("an earlier run\n")
    url = f"http://127.0.0.1:{port}/"
    process = start_and_wait(_http_server(port), "test server", lambda: answers(url), 30, log_file=log)
    try:
        assert process.poll() is None and answers(url)
    finally:
        stop(process)
    assert not answers(url)
    assert log.read_text().startswith("an earlier run\n") and f"port {port}" in log.read_text()


def test_a_process_that_exits_while_starting_fails_quoting_the_end_of_its_output(tmp_path: Path) -> None:
    crash = "import sys; print('line one'); print('cannot load model.gguf', file=sys.stderr); sys.exit(3)"
    log = tmp_path / "crash.log"
    with pytest.raises(ProcessStartError) as caught:
        start_and_wait([sys.executable, "-c", crash], "model server", lambda: False, 30, log_file=log)
    message = str(caught.value)
    assert message.startswith(f"the model server exited with status 3 before answering (log {log})")
    assert message.endswith("line one\ncannot load model.gguf")


def test_output_goes_to_a_temporary_file_when_no_log_is_named() -> None:
    with pytest.raises(ProcessStartError, match=r"status 1 before answering; its output ends with:\nboom$"):
        start_and_wait([sys.executable, "-c", "print('boom'); raise SystemExit(1)"], "server", lambda: False, 30)


def test_a_silent_process_is_stopped_after_the_timeout_with_its_output_in_the_error(tmp_path: Path) -> None:
    log = tmp_path / "silent.log"
    started = time.monotonic()
    with pytest.raises(ProcessStartError, match=r"the silent server did not answer within 1 s \(log .*\); "
                                                r"its output ends with:\nloading"):
        start_and_wait([sys.executable, "-c", SILENT], "silent server", lambda: False, 1, log_file=log)
    assert time.monotonic() - started < 15
    assert not any(_alive(pid) for pid in _pids_printed(log))


def test_a_detached_process_leads_a_session_of_its_own_and_stops_with_its_whole_group(tmp_path: Path) -> None:
    log = tmp_path / "detached.log"
    printed = []

    def ready() -> bool:
        printed.extend(_pids_printed(log))
        return True

    process = start_and_wait([sys.executable, "-c", SILENT_WITH_A_CHILD], "detached server", ready, 30,
                             log_file=log, detached=True)
    leader, child = printed
    assert process.pid == leader and os.getsid(leader) == leader != os.getsid(0)
    stop_group(leader, grace_s=5)
    assert not _alive(leader) and not _alive(child)


def test_a_detached_process_that_fails_to_start_is_stopped_with_its_children(tmp_path: Path) -> None:
    log = tmp_path / "detached.log"
    with pytest.raises(ProcessStartError, match="did not answer within 1 s"):
        start_and_wait([sys.executable, "-c", SILENT_WITH_A_CHILD], "detached server", lambda: False, 1,
                       log_file=log, detached=True)
    leader, child = _pids_printed(log)
    assert not _alive(leader) and not _alive(child)


def test_an_interrupted_wait_stops_the_process(tmp_path: Path) -> None:
    log = tmp_path / "interrupted.log"

    def ctrl_c_once_it_prints() -> bool:
        _pids_printed(log)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        start_and_wait([sys.executable, "-c", SILENT], "server", ctrl_c_once_it_prints, 30, log_file=log)
    assert not any(_alive(pid) for pid in _pids_printed(log))
