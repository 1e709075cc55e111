"""The label-space flow: describe -> embed -> cluster."""

from __future__ import annotations

from prefect import flow

from tasks.params import LabelSpaceParams
from tasks.plans import plan_label_space
from tasks.prefect_tasks import cluster_task, describe_task, embed_task, task_options
from tasks.store import ArtifactStore


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
