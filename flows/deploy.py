"""Deploy the project's flows and run them through the local work pool, as ``prolab demo`` does.

Deployments come from ``prefect.yaml`` with ``prefect --no-prompt deploy --all`` from the
project root and the project's pinned API URL: the command a user types, so the demo teaches
the real workflow. Runs start with Prefect's ``run_deployment`` and are waited for with
``wait_for_flow_run``; what the demo adds is each stage's state as it finishes, and the
addresses to open.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from uuid import UUID

from tasks import PROJECT_ROOT
from tasks.errors import ProLabError

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun
    from prefect.exceptions import PrefectHTTPStatusError

log = logging.getLogger(__name__)

PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"
END_TO_END = "end-to-end/end-to-end"
POLL_S = 1.0
SETTLE_POLLS = 3


class DeploymentError(ProLabError, RuntimeError):
    """Deploying or starting a run failed; the message carries Prefect's own explanation."""


def yaml_deployments() -> dict[str, str]:
    """``{deployment name: entrypoint}`` of ``prefect.yaml``, in its order."""
    import yaml

    with open(PREFECT_YAML) as spec:
        return {deployment["name"]: deployment["entrypoint"] for deployment in yaml.safe_load(spec)["deployments"]}


def deploy_all() -> list[str]:
    """Apply every deployment of ``prefect.yaml``; return their ``flow/deployment`` names."""
    from flows.worker import ensure_work_pool

    ensure_work_pool()  # prefect deploy refuses a pool that does not exist
    result = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise DeploymentError(f"prefect deploy --all failed:\n{tail}")
    names = deployed_names()
    log.info("deployed %s", ", ".join(names))
    return names


def deployed_names() -> list[str]:
    """``flow/deployment`` of each deployment of ``prefect.yaml``, as the server holds them: a
    deployment is the yaml's when its name and entrypoint match."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowFilter, FlowFilterId

    wanted = yaml_deployments()
    with get_client(sync_client=True) as client:
        deployments = [found for found in client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=list(wanted))))
            if found.entrypoint == wanted[found.name]]
        flows = client.read_flows(flow_filter=FlowFilter(id=FlowFilterId(any_=[found.flow_id for found in deployments])))
    flow_names = {flow.id: flow.name for flow in flows}
    names = {found.name: f"{flow_names[found.flow_id]}/{found.name}" for found in deployments}
    if missing := [name for name in wanted if name not in names]:
        raise DeploymentError(f"prefect deploy --all succeeded but the server holds no deployment "
                              f"{', '.join(missing)} of {PREFECT_YAML}")
    return [names[name] for name in wanted]


def start_run(name: str, parameters: Mapping[str, Any] | None = None) -> FlowRun:
    """A new run of deployment ``name`` (``flow/deployment``), scheduled now; not waited for.

    The server checks ``parameters`` against the deployment's schema first: a bad value is
    refused here, with the field named, before any run exists.
    """
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    try:
        return run_deployment(name, parameters=dict(parameters or {}), timeout=0)
    except ObjectNotFound:
        raise DeploymentError(f"no deployment {name} on {_api_url()}: `prolab deploy` applies prefect.yaml") from None
    except PrefectHTTPStatusError as error:
        raise DeploymentError(f"the server refused a run of {name}: {_detail(error)}") from None


def _detail(error: PrefectHTTPStatusError) -> str:
    """The server's own explanation of a refused request."""
    try:
        return str(error.response.json()["detail"])
    except (ValueError, KeyError, TypeError):
        return str(error)


def _api_url() -> str:
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url)


def flow_run_url(flow_run_id: UUID) -> str:
    from prefect.utilities.urls import url_for

    return url_for("flow-run", obj_id=flow_run_id) or str(flow_run_id)


async def _report_task_runs(client: PrefectClient, flow_run_id: UUID, reported: set[UUID]) -> None:
    """Log the run's newly finished task runs (each is named after its stage)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    task_runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    new = [run for run in task_runs if run.id not in reported and run.state is not None and run.state.is_final()]
    for task_run in sorted(new, key=lambda run: run.expected_start_time or run.created):
        log.info("  %s: %s", task_run.name, task_run.state.name)
        reported.add(task_run.id)


async def _follow(flow_run_id: UUID) -> FlowRun:
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import wait_for_flow_run

    reported: set[UUID] = set()
    async with get_client() as client:
        finished = asyncio.ensure_future(wait_for_flow_run(flow_run_id, timeout=None, client=client))
        while not finished.done():
            await _report_task_runs(client, flow_run_id, reported)
            await asyncio.wait({finished}, timeout=POLL_S)
        flow_run = finished.result()
        # The server records task runs from events, a moment after the flow run's final state.
        for _ in range(SETTLE_POLLS):
            await asyncio.sleep(POLL_S)
            await _report_task_runs(client, flow_run_id, reported)
    log.info("flow run %s: %s", flow_run.name, flow_run.state.name)
    return flow_run


def wait(flow_run_id: UUID) -> FlowRun:
    """Wait for the run's final state (``wait_for_flow_run``), logging each stage as it finishes
    and then the run's state."""
    return asyncio.run(_follow(flow_run_id))


def ui_url() -> str:
    from prefect.settings import get_current_settings

    return get_current_settings().ui_url or ""


def demo(parameters: Mapping[str, Any] | None = None) -> FlowRun:
    """The README's first command, after the server is up: a worker on the local pool, every
    deployment applied, the end-to-end deployment run and waited for."""
    from flows import worker

    worker.start()
    deploy_all()
    flow_run = start_run(END_TO_END, parameters)
    log.info("end-to-end run %s started; following it (Ctrl-C stops following, not the run)",
             flow_run_url(flow_run.id))
    return wait(flow_run.id)
