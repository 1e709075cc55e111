"""Fixture and helpers: deployment runs as a user starts them (``prolab`` and ``prefect`` commands), checked through
the Prefect API of the test session's server.

``demo_run`` (session) is ``prolab demo`` with the demo classes imported from a small
descriptor file and a tiny training budget: it starts the worker, deploys ``prefect.yaml`` and
runs the end-to-end deployment once; the tests that follow rerun and vary it.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from data.demo import DEMO_CLASSES
from tasks import registry
from tasks.params import EndToEndParams
from tests.helpers.cli import PROJECT_ROOT, PROLAB
from tests.helpers.demo_runs import tiny_options

PREFECT = str(PROJECT_ROOT / ".venv" / "bin" / "prefect")
# The stages the end-to-end run computes with these tests' parameters (no images: no predict), in DAG order.
STAGES = tuple(registry.end_to_end(EndToEndParams()))


def run_command(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout)


def write_descriptors(path: Path, edited: str | None = None) -> Path:
    """Three descriptions for each demo class; ``edited`` gets three different ones."""
    descriptions = {name: [f"{name} {part}" for part in ("shape", "colour", "texture")] for name in DEMO_CLASSES}
    if edited is not None:
        descriptions[edited] = [f"{edited} seen from above", f"{edited} at night", f"{edited} in the rain"]
    path.write_text(json.dumps(descriptions, indent=2))
    return path


def pipeline_params(descriptors: Path, data_root: Path, k: int = 4) -> dict[str, Any]:
    """EndToEndParams as JSON: imported descriptions, the small demo dataset, 2 iterations."""
    return {"label_space": {"describe": {"descriptors": str(descriptors)}, "cluster": {"k": k}},
            "train": {"config": "demo", "data_root": str(data_root), "cfg_options": tiny_options(2)}}


@contextlib.contextmanager
def api(env: dict[str, str]) -> Iterator[Any]:
    """A Prefect client of the server that ``env`` pins."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        yield client


def start_deployment(env: dict[str, str], name: str, params: dict[str, Any]) -> UUID:
    """``prefect deployment run NAME --params {"params": ...}``; the id it prints."""
    result = run_command(env, PREFECT, "deployment", "run", name, "--params", json.dumps({"params": params}))
    assert result.returncode == 0, result.stdout + result.stderr
    return UUID(result.stdout.split("UUID:")[1].split()[0])


def wait_final(env: dict[str, str], flow_run_id: UUID, timeout: float = 400) -> Any:
    """The flow run once its state is final."""
    deadline = time.monotonic() + timeout
    with api(env) as client:
        while time.monotonic() < deadline:
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state is not None and flow_run.state.is_final():
                return flow_run
            time.sleep(1)
    raise TimeoutError(f"flow run {flow_run_id} not final after {timeout} s")


def stage_states(env: dict[str, str], flow_run_id: UUID, expected: int, timeout: float = 30) -> dict[str, str]:
    """``{stage: state name}`` of the flow run's task runs (named after their stage), once all
    ``expected`` are recorded: the server writes task runs from events, shortly after the fact."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    with api(env) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            final = [run for run in runs if run.state is not None and run.state.is_final()]
            if len(final) >= expected or time.monotonic() > deadline:
                # a task run is named after its stage, then maybe a comma or a note: "repair, 2 rounds at most"
                return {re.split(r"[\s,]", run.name, maxsplit=1)[0]: run.state.name for run in final}
            time.sleep(0.5)


def run_artifact_keys(env: dict[str, str], flow_run_id: UUID) -> set[str]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with api(env) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {artifact.key for artifact in artifacts if artifact.key}


@dataclass(frozen=True)
class DemoRun:
    env: dict[str, str]
    store: Path
    data_root: Path
    descriptors: Path
    params: dict[str, Any]
    flow_run_id: UUID
    stdout: str
    seconds: float


@pytest.fixture(scope="session")
def demo_run(prefect_server: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
             demo_root: Path) -> Iterator[DemoRun]:
    """``prolab demo`` against the session's server; its worker is stopped at the end."""
    root = tmp_path_factory.mktemp("pipeline")
    env = {**prefect_server, "PROLAB_ARTIFACTS": str(root / "artifacts"), "HF_HUB_OFFLINE": "1"}
    descriptors = write_descriptors(root / "descriptors.json")
    params = pipeline_params(descriptors, demo_root)
    started = time.monotonic()
    try:
        result = run_command(env, PROLAB, "demo", "--params", json.dumps(params), timeout=600)
        assert result.returncode == 0, result.stderr[-4000:]
        flow_run_id = UUID(result.stdout.strip().splitlines()[-1].rsplit("/", 1)[-1])
        yield DemoRun(env, root / "artifacts", demo_root, descriptors, params, flow_run_id, result.stdout,
                      time.monotonic() - started)
    finally:
        run_command(env, PROLAB, "worker", "stop")
