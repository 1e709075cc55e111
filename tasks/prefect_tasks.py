"""The stages as Prefect tasks: thin wrappers whose cache key is the artifact key.

A task's result is only the artifact path (JSON), and its cache record is kept beside the
artifacts (``<root>/.prefect-results``; for a URL root, in this machine's cache), so a reused
stage shows as Cached in the UI. A record whose artifact was deleted or damaged is dropped
before Prefect looks it up: the stage recomputes instead of returning a path to nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

from tasks.cluster import run_cluster
from tasks.describe import run_describe
from tasks.embed import run_embed
from tasks.model_stages import run_evaluate, run_train
from tasks.params import ClusterParams, DescribeParams, EmbedParams, EvaluateParams, TrainParams
from tasks.reports import report_stage
from tasks.stage import StagePlan
from tasks.store import ArtifactStore

RESULTS_DIR = ".prefect-results"


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


def task_options(store: ArtifactStore) -> dict[str, Any]:
    """Options that bind the stage tasks to one store root."""
    records = store.root / RESULTS_DIR
    return {
        "cache_policy": ArtifactCachePolicy(),
        "result_storage": records,
        "result_serializer": "json",
        "persist_result": True,
    }


@task(name="describe", task_run_name="describe {params.dataset}", retries=1, retry_delay_seconds=5)
def describe_task(plan: StagePlan, params: DescribeParams, store_root: str) -> str:
    described = run_describe(plan, params, ArtifactStore(store_root))
    report_stage("describe", described)
    return str(described)


@task(name="embed", task_run_name="embed with {params.embedder}")
def embed_task(described: str, plan: StagePlan, params: EmbedParams, store_root: str) -> str:
    embedded = run_embed(Path(described), plan, params, ArtifactStore(store_root))
    report_stage("embed", embedded)
    return str(embedded)


@task(name="cluster", task_run_name="cluster k={params.k}")
def cluster_task(embedded: str, plan: StagePlan, params: ClusterParams, store_root: str) -> str:
    label_space = run_cluster(Path(embedded), plan, params, ArtifactStore(store_root))
    report_stage("cluster", label_space)
    return str(label_space)


@task(name="train", task_run_name="train {params.config}")
def train_task(label_space: str, plan: StagePlan, params: TrainParams, store_root: str) -> str:
    run = run_train(Path(label_space), plan, params, ArtifactStore(store_root))
    report_stage("train", run)
    return str(run)


@task(name="evaluate", task_run_name="evaluate {params.split}")
def evaluate_task(label_space: str, run: str, plan: StagePlan, train: TrainParams, params: EvaluateParams,
                  store_root: str) -> str:
    evaluated = run_evaluate(Path(label_space), Path(run), plan, train, params, ArtifactStore(store_root))
    report_stage("evaluate", evaluated)
    return str(evaluated)
