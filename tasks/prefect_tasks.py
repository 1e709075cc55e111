"""The stages as Prefect tasks, one per entry of ``tasks.registry.STAGES``, whose cache key is
the artifact key.

A task's result is only the artifact path (JSON), and its cache record is kept beside the
artifacts (``<root>/.prefect-results``; for a URL root, in this machine's cache), so a reused
stage shows as Cached in the UI. A record whose artifact was deleted or damaged is dropped
before Prefect looks it up: the stage recomputes instead of returning a path to nothing.
After a stage runs (or is found), its reports are published as Prefect artifacts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.runtime import task_run

from tasks.params import EndToEndParams
from tasks.registry import STAGES, Execute, Stage
from tasks.reports import publish_reports
from tasks.stage import StagePlan
from tasks.store import RESULTS_DIR, ArtifactStore


@dataclass
class ArtifactCachePolicy(CachePolicy):
    """Cache key = ``<stage>-<artifact key>`` of the task's ``plan`` argument."""

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str:
        plan: StagePlan = inputs["plan"]
        store = ArtifactStore(inputs["store_root"])
        cache_key = f"{plan.stage}-{plan.key}"
        if store.get(plan.stage, plan.key) is None:
            (store.root / RESULTS_DIR / cache_key).unlink(missing_ok=True)
        return cache_key


def _stage_task(stage: Stage) -> Task:
    def run_stage(plan: StagePlan, params: EndToEndParams, inputs: dict[str, str], store_root: str) -> str:
        directory = stage.run(plan, params, {role: Path(path) for role, path in inputs.items()},
                              ArtifactStore(store_root))
        publish_reports(stage.name, stage.module.reports, directory)
        return str(directory)

    run_stage.__qualname__ = run_stage.__name__ = f"{stage.name}_stage"  # Prefect's task key
    return task(run_stage, name=stage.name, retries=stage.retries, retry_delay_seconds=stage.retry_delay_seconds,
                task_run_name=lambda: stage.module.run_name(task_run.parameters["params"]))


TASKS: dict[str, Task] = {stage.name: _stage_task(stage) for stage in STAGES}


def execute_as_task(store: ArtifactStore) -> Execute:
    """A ``tasks.registry.run_stages`` executor that runs each stage as its Prefect task, with
    the cache records of ``store``."""
    options = {
        "cache_policy": ArtifactCachePolicy(),
        "result_storage": store.root / RESULTS_DIR,
        "result_serializer": "json",
        "persist_result": True,
    }

    def execute(stage: Stage, plan: StagePlan, params: EndToEndParams, inputs: Mapping[str, Path],
                _: ArtifactStore) -> Path:
        result = TASKS[stage.name].with_options(**options)(plan, params, {r: str(p) for r, p in inputs.items()},
                                                          store.location)
        return Path(result)

    return execute
