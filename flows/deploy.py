"""Deploy the project's flows and run them through the local work pool, as ``prolab demo`` does.

Deployments come from ``prefect.yaml`` (``prefect --no-prompt deploy --all`` from the project
root) and runs start with ``prefect deployment run``: the commands a user types, with the
project's pinned API URL, so the demo teaches the real workflow. What the demo adds is
waiting for the run, reporting each stage as it finishes, and the addresses to open.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from uuid import UUID

from flows.server import PROJECT_ROOT

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

log = logging.getLogger(__name__)

END_TO_END = "end-to-end/end-to-end"
POLL_S = 1.0
SETTLE_POLLS = 3
_UUID = re.compile(r"UUID: ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


class DeploymentError(RuntimeError):
    """Deploying or starting a run failed; the message carries Prefect's own explanation."""


def _prefect(args: list[str]) -> subprocess.CompletedProcess[str]:
    """The Prefect CLI of this environment, at the project root, never prompting."""
    env = {**os.environ, "COLUMNS": "240"}  # keep rich from wrapping the lines we read
    return subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", *args], cwd=PROJECT_ROOT,
                          env=env, capture_output=True, text=True)


def _tail(result: subprocess.CompletedProcess[str], lines: int = 25) -> str:
    return "\n".join((result.stdout + result.stderr).strip().splitlines()[-lines:])


def deploy_all() -> list[str]:
    """Apply every deployment of ``prefect.yaml``; return their ``flow/deployment`` names."""
    from flows.worker import ensure_work_pool

    ensure_work_pool()  # prefect deploy refuses a pool that does not exist
    result = _prefect(["deploy", "--all"])
    if result.returncode != 0:
        raise DeploymentError(f"prefect deploy --all failed:\n{_tail(result)}")
    names = re.findall(r"Deployment '([^']+)' successfully (?:created|updated)", result.stdout)
    log.info("deployed %s", ", ".join(names))
    return names


def start_run(name: str, parameters: Mapping[str, Any] | None = None) -> UUID:
    """``prefect deployment run NAME --params JSON``; the new flow run's id.

    The server checks ``parameters`` against the deployment's schema first: a bad value is
    refused here, with the field named, before any run exists.
    """
    args = ["deployment", "run", name]
    if parameters:
        args += ["--params", json.dumps(parameters)]
    result = _prefect(args)
    found = _UUID.search(result.stdout)
    if result.returncode != 0 or found is None:
        raise DeploymentError(f"prefect deployment run {name} failed:\n{_tail(result)}")
    return UUID(found.group(1))


def flow_run_url(flow_run_id: UUID) -> str:
    from prefect.utilities.urls import url_for

    return url_for("flow-run", obj_id=flow_run_id) or str(flow_run_id)


def _report_task_runs(client: SyncPrefectClient, flow_run_id: UUID, reported: set[UUID]) -> None:
    """Log the run's newly finished task runs (each is named after its stage)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    new = [run for run in task_runs if run.id not in reported and run.state is not None and run.state.is_final()]
    for task_run in sorted(new, key=lambda run: run.expected_start_time or run.created):
        log.info("  %s: %s", task_run.name, task_run.state.name)
        reported.add(task_run.id)


def wait(flow_run_id: UUID) -> FlowRun:
    """Poll the run until its state is final, logging each stage as it finishes."""
    from prefect.client.orchestration import get_client

    reported: set[UUID] = set()
    last_state = None
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run_id)
            state = flow_run.state
            if state is not None and state.name != last_state:
                log.info("flow run %s: %s", flow_run.name, state.name)
                last_state = state.name
            _report_task_runs(client, flow_run_id, reported)
            if state is not None and state.is_final():
                break
            time.sleep(POLL_S)
        # The server records task runs from events, a moment after the flow run's final state.
        for _ in range(SETTLE_POLLS):
            time.sleep(POLL_S)
            _report_task_runs(client, flow_run_id, reported)
    return flow_run


def ui_url() -> str:
    from prefect.settings import get_current_settings

    return get_current_settings().ui_url or ""


def demo(parameters: Mapping[str, Any] | None = None) -> FlowRun:
    """The README's first command, after the server is up: a worker on the local pool, every
    deployment applied, the end-to-end deployment run and waited for."""
    from flows import worker

    worker.start()
    deploy_all()
    flow_run_id = start_run(END_TO_END, parameters)
    log.info("end-to-end run %s started; following it (Ctrl-C stops following, not the run)",
             flow_run_url(flow_run_id))
    return wait(flow_run_id)
