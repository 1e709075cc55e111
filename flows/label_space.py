"""The label-space flow: describe -> embed -> cluster."""

from __future__ import annotations

from prefect import flow

from tasks.cluster import plan_cluster
from tasks.describe import plan_describe
from tasks.embed import plan_embed
from tasks.params import LabelSpaceParams
from tasks.prefect_tasks import cluster_task, describe_task, embed_task, task_options
from tasks.stage import StagePlan
from tasks.store import ArtifactStore


def plan_label_space(params: LabelSpaceParams) -> dict[str, StagePlan]:
    """Every stage's key, known before anything runs."""
    described = plan_describe(params.describe)
    embedded = plan_embed(described, params.embed)
    return {"describe": described, "embed": embedded, "cluster": plan_cluster(embedded, params.cluster)}


@flow(name="label-space", log_prints=True)
def label_space_flow(params: LabelSpaceParams = LabelSpaceParams(), artifacts: str | None = None) -> str:
    """Build (or reuse) the label space; returns its artifact directory."""
    store = ArtifactStore(artifacts)
    plans = plan_label_space(params)
    options = task_options(store)
    root = store.location
    described = describe_task.with_options(**options)(plans["describe"], params.describe, root)
    embedded = embed_task.with_options(**options)(described, plans["embed"], params.embed, root)
    return cluster_task.with_options(**options)(embedded, plans["cluster"], params.cluster, root)
