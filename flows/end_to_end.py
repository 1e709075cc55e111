"""The end-to-end flow: label space -> train -> evaluate; and the flows behind ``prolab train``
and ``prolab evaluate``, which take any label space directory and checkpoint.

Each flow plans every key first (cheap), then calls the stage tasks; a stage whose
artifact exists shows as Cached and computes nothing.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from tasks.model_stages import checkpoint_ref, plan_evaluate, plan_train
from tasks.label_space import label_space_ref
from tasks.params import EndToEndParams, EvaluateParams, TrainParams
from tasks.plans import plan_pipeline
from tasks.prefect_tasks import cluster_task, describe_task, embed_task, evaluate_task, task_options, train_task
from tasks.store import ArtifactStore


@flow(name="end-to-end", log_prints=True)
def end_to_end_flow(params: EndToEndParams = EndToEndParams(), artifacts: str | None = None) -> str:
    """Describe, embed, cluster, train and evaluate; returns the evaluation's artifact directory."""
    store = ArtifactStore(artifacts)
    root, options = store.location, task_options(store)
    plans = plan_pipeline(params)

    described = describe_task.with_options(**options)(plans["describe"], params.label_space.describe, root)
    embedded = embed_task.with_options(**options)(described, plans["embed"], params.label_space.embed, root)
    label_space = cluster_task.with_options(**options)(embedded, plans["cluster"], params.label_space.cluster, root)
    run = train_task.with_options(**options)(label_space, plans["train"], params.train, root)
    return evaluate_task.with_options(**options)(label_space, run, plans["evaluate"], params.train,
                                                 params.evaluate, root)


@flow(name="train-on-label-space", log_prints=True)
def train_on_label_space_flow(label_space: str, params: TrainParams = TrainParams(),
                              artifacts: str | None = None) -> str:
    """Train on a label space directory; returns the training run's artifact directory."""
    store = ArtifactStore(artifacts)
    plan = plan_train(label_space_ref(Path(label_space)), params)
    return train_task.with_options(**task_options(store))(label_space, plan, params, store.location)


@flow(name="evaluate-checkpoint", log_prints=True)
def evaluate_checkpoint_flow(label_space: str, checkpoint: str, train: TrainParams = TrainParams(),
                             params: EvaluateParams = EvaluateParams(), artifacts: str | None = None) -> str:
    """Score a training run (directory or checkpoint file); returns the evaluation's artifact directory."""
    store = ArtifactStore(artifacts)
    plan = plan_evaluate(checkpoint_ref(Path(checkpoint)), label_space_ref(Path(label_space)), train, params)
    return evaluate_task.with_options(**task_options(store))(label_space, checkpoint, plan, train, params,
                                                            store.location)
