"""The project's local Prefect worker: one process worker on the ``prolab-local`` pool, detached.

Deployments run only where a worker polls their pool. Like the server, the worker runs
detached with its pid and log under the Prefect home (``.prefect/worker.json``,
``.prefect/worker.log``) so ``prolab server stop`` can end both. An idle worker ignores the
first SIGTERM while it finishes its poll, so stopping sends a second one before SIGKILL.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from flows.server import local_server
from tasks import PROJECT_ROOT
from tasks.processes import start_and_wait, wait_group_gone

log = logging.getLogger(__name__)

POOL = "prolab-local"
# How often the worker asks for scheduled runs; Prefect's default (10 s) is felt in every run.
QUERY_SECONDS = "2"
STARTUP_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class LocalWorker:
    home: Path
    pool: str = POOL

    @property
    def name(self) -> str:
        return f"{self.pool}-worker"

    @property
    def state_file(self) -> Path:
        return self.home / "worker.json"

    @property
    def log_file(self) -> Path:
        return self.home / "worker.log"


def local_worker() -> LocalWorker:
    """The worker of this checkout: its files live beside the local server's."""
    return LocalWorker(local_server().home)


def _pid(worker: LocalWorker) -> int | None:
    """The recorded pid while that process is alive and still a Prefect worker."""
    if not worker.state_file.is_file():
        return None
    pid = int(json.loads(worker.state_file.read_text())["pid"])
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or another user's process by now
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.is_file() and b"worker" not in cmdline.read_bytes():  # the pid was reused
        return None
    return pid


def is_running(worker: LocalWorker) -> bool:
    return _pid(worker) is not None


def ensure_work_pool(pool: str = POOL) -> None:
    """Create the process work pool (with Prefect's default job template) unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(
                name=pool, type=ProcessWorker.type,
                base_job_template=ProcessWorker.get_default_base_job_template(),
                description="ProLab's local process pool: flow runs as subprocesses of `prolab worker`",
            ))
            log.info("created work pool %s", pool)
        except ObjectAlreadyExists:
            pass


def _registered(worker: LocalWorker) -> bool:
    """Whether the server has heard from this worker (it heartbeats once it polls)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import WorkerFilter, WorkerFilterStatus

    with get_client(sync_client=True) as client:
        online = client.read_workers_for_work_pool(
            worker.pool, worker_filter=WorkerFilter(status=WorkerFilterStatus(any_=["ONLINE"])))
    return any(found.name == worker.name for found in online)


def start(worker: LocalWorker | None = None) -> LocalWorker:
    """Start the worker detached unless it is running; return once the server sees it.

    It inherits this process's environment, which must pin ``PREFECT_API_URL``; its flow runs
    inherit it in turn, so settings such as ``PROLAB_ARTIFACTS`` reach every deployment run.
    """
    worker = worker or local_worker()
    if is_running(worker):
        return worker
    ensure_work_pool(worker.pool)
    run_env = {**os.environ, "PREFECT_WORKER_QUERY_SECONDS": QUERY_SECONDS}
    process = start_and_wait(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", worker.pool, "--type", "process",
         "--name", worker.name],
        "Prefect worker", lambda: _registered(worker), STARTUP_TIMEOUT_S, log_file=worker.log_file,
        env=run_env, cwd=PROJECT_ROOT, detached=True,
    )
    worker.state_file.write_text(json.dumps({"pid": process.pid, "pool": worker.pool,
                                             "api_url": run_env.get("PREFECT_API_URL")}))
    log.info("worker %s polls pool %s (log %s)", worker.name, worker.pool, worker.log_file)
    return worker


def _flow_runs(worker_pid: int) -> dict[int, str]:
    """``{process group: flow run id}`` of the runs the worker started: each runs in a session
    of its own (so signalling the worker's group alone would leave it running), with its flow
    run's id in its environment."""
    runs = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
            if int(fields[1]) != worker_pid:
                continue
            environ = dict(item.split("=", 1) for item in (proc / "environ").read_text().split("\0") if "=" in item)
        except (OSError, IndexError):
            continue  # ended meanwhile
        if "PREFECT__FLOW_RUN_ID" in environ:
            runs[int(fields[2])] = environ["PREFECT__FLOW_RUN_ID"]
    return runs


def _signal(groups: set[int], signum: int) -> None:
    for group in groups:
        try:
            os.killpg(group, signum)
        except ProcessLookupError:
            pass


def _mark_crashed(api_url: str | None, flow_run_ids: list[str]) -> None:
    """Record the stopped runs as Crashed: killed processes report nothing, and a run left
    Running would be a lie in the UI."""
    if not flow_run_ids or not api_url:
        return
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Crashed

    try:
        with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            for flow_run_id in flow_run_ids:
                client.set_flow_run_state(flow_run_id, Crashed(message="stopped with its worker (prolab server stop)"),
                                          force=True)
    except Exception as error:  # noqa: BLE001 - best effort: the processes are stopped either way
        log.warning("could not mark stopped flow runs %s as Crashed: %s", ", ".join(flow_run_ids), error)


def stop(worker: LocalWorker | None = None) -> bool:
    """Stop the worker and the flow runs it started (marked Crashed); False if it was not running.

    Stop the worker before the server: marking the runs needs the API.
    """
    worker = worker or local_worker()
    pid = _pid(worker)
    record = json.loads(worker.state_file.read_text()) if pid is not None else {}
    worker.state_file.unlink(missing_ok=True)
    if pid is None:
        return False
    runs = _flow_runs(pid)
    groups = {pid, *runs}
    _signal(groups, signal.SIGTERM)
    if not wait_group_gone(pid, 1.0):
        _signal({pid}, signal.SIGTERM)  # an idle worker exits on the second signal
    if not all(wait_group_gone(group, STOP_GRACE_S) for group in groups):
        _signal(groups, signal.SIGKILL)
    _mark_crashed(record.get("api_url"), list(runs.values()))
    return True
