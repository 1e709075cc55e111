"""Single-stage flows: compute one stage from the artifacts its upstream stages left in the store.

Each takes the end-to-end parameters, so a stage's deployment is run with the same JSON as
the end-to-end one, and its inputs are found by the keys those parameters give the upstream
stages. An upstream artifact that is absent is not computed behind the user's back: the run
fails and names the stage to run first.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from tasks.params import EndToEndParams
from tasks.plans import STAGES, plan_pipeline
from tasks.prefect_tasks import cluster_task, describe_task, embed_task, evaluate_task, task_options, train_task
from tasks.stage import StagePlan
from tasks.store import ArtifactStore

UPSTREAM: dict[str, tuple[str, ...]] = {
    "describe": (),
    "embed": ("describe",),
    "cluster": ("embed",),
    "train": ("cluster",),
    "evaluate": ("cluster", "train"),
}


class MissingUpstreamError(RuntimeError):
    """A single stage was asked for before the stage it reads from has run."""


def upstream_paths(store: ArtifactStore, plans: dict[str, StagePlan], stage: str) -> list[str]:
    """The directories of ``stage``'s inputs, in ``UPSTREAM`` order, or the stage to run first."""
    paths = []
    for needed in UPSTREAM[stage]:
        found = store.get(needed, plans[needed].key)
        if found is None:
            raise MissingUpstreamError(
                f"{stage} reads the {needed} artifact {plans[needed].ref()}, which is not in {store.location}: "
                f"run the {needed} stage first with the same parameters (deployment '{needed}/{needed}', "
                f"or 'end-to-end/end-to-end' for everything)")
        paths.append(str(found.path))
    return paths


def _prepare(stage: str, params: EndToEndParams, artifacts: str | None) -> tuple[ArtifactStore, StagePlan, list[str]]:
    store = ArtifactStore(artifacts)
    plans = plan_pipeline(params, through=stage)
    inputs = upstream_paths(store, plans, stage)
    get_run_logger().info("%s %s from %s", stage, plans[stage].key,
                          ", ".join(inputs) or "its parameters alone")
    return store, plans[stage], inputs


@flow(name="describe", log_prints=True)
def describe_flow(params: EndToEndParams = EndToEndParams(), artifacts: str | None = None) -> str:
    """Describe the classes (import or LLM); returns the describe artifact's directory."""
    store, plan, _ = _prepare("describe", params, artifacts)
    return describe_task.with_options(**task_options(store))(plan, params.label_space.describe, store.location)


@flow(name="embed", log_prints=True)
def embed_flow(params: EndToEndParams = EndToEndParams(), artifacts: str | None = None) -> str:
    """Embed the stored descriptions; returns the embed artifact's directory."""
    store, plan, (described,) = _prepare("embed", params, artifacts)
    return embed_task.with_options(**task_options(store))(described, plan, params.label_space.embed,
                                                         store.location)


@flow(name="cluster", log_prints=True)
def cluster_flow(params: EndToEndParams = EndToEndParams(), artifacts: str | None = None) -> str:
    """Cluster the stored embeddings into the label space; returns its directory."""
    store, plan, (embedded,) = _prepare("cluster", params, artifacts)
    return cluster_task.with_options(**task_options(store))(embedded, plan, params.label_space.cluster,
                                                           store.location)


@flow(name="train", log_prints=True)
def train_flow(params: EndToEndParams = EndToEndParams(), artifacts: str | None = None) -> str:
    """Train on the stored label space; returns the training run's directory."""
    store, plan, (label_space,) = _prepare("train", params, artifacts)
    return train_task.with_options(**task_options(store))(label_space, plan, params.train, store.location)


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params: EndToEndParams = EndToEndParams(), artifacts: str | None = None) -> str:
    """Evaluate the stored training run; returns the evaluation's directory."""
    store, plan, (label_space, run) = _prepare("evaluate", params, artifacts)
    return evaluate_task.with_options(**task_options(store))(label_space, run, plan, params.train,
                                                            params.evaluate, store.location)
