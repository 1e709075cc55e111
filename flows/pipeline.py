"""The pipeline's flows: end to end, the label space alone, and the flows behind ``prolab
train``, ``prolab evaluate`` and ``prolab predict``, which take any label space directory and
checkpoint.

Each flow first refuses what its parameters and inputs alone show cannot run
(``tasks.preflight``: the checks the command line makes before it creates a flow run, made
again for a deployment run, which skips the command line), then plans every key (cheap; bad
input fails before any stage runs), then runs the stages in DAG order as Prefect tasks
(``tasks.registry.run_stages``); a stage whose artifact exists shows as Cached and computes
nothing.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from tasks.model.checkpoints import training_run
from tasks.params import EndToEndParams, EvaluateParams, LabelSpaceParams, TrainParams
from tasks.prefect_tasks import execute_as_task
from tasks.preflight import preflight
from tasks.registry import LABEL_SPACE, LABEL_SPACE_STAGES, end_to_end, run_stages
from tasks.store import ArtifactStore


@flow(name="end-to-end", log_prints=True)
def end_to_end_flow(params: EndToEndParams = EndToEndParams(), artifacts: str | None = None) -> str:
    """Describe, verify, embed, cluster, repair, train and evaluate (and predict, given images);
    returns the evaluation's artifact directory."""
    names = end_to_end(params)
    store = ArtifactStore(artifacts)
    preflight(params, names, store=store)
    paths = run_stages(params, store, names, execute=execute_as_task(store))
    return str(paths["evaluate"])


@flow(name="label-space", log_prints=True)
def label_space_flow(params: LabelSpaceParams = LabelSpaceParams(), artifacts: str | None = None) -> str:
    """Build (or reuse) the label space; returns its artifact directory."""
    pipeline = EndToEndParams(label_space=params)
    store = ArtifactStore(artifacts)
    preflight(pipeline, LABEL_SPACE_STAGES, store=store)
    paths = run_stages(pipeline, store, LABEL_SPACE_STAGES, execute=execute_as_task(store))
    return str(paths[LABEL_SPACE])


@flow(name="train-on-label-space", log_prints=True)
def train_on_label_space_flow(label_space: str, params: TrainParams = TrainParams(),
                              artifacts: str | None = None) -> str:
    """Train on a label space directory; returns the training run's artifact directory."""
    pipeline, given = EndToEndParams(train=params), {LABEL_SPACE: Path(label_space)}
    preflight(pipeline, ["train"], given)
    store = ArtifactStore(artifacts)
    paths = run_stages(pipeline, store, ["train"], given=given, execute=execute_as_task(store))
    return str(paths["train"])


@flow(name="evaluate-checkpoint", log_prints=True)
def evaluate_checkpoint_flow(label_space: str, checkpoint: str, train: TrainParams = TrainParams(),
                             params: EvaluateParams = EvaluateParams(), artifacts: str | None = None) -> str:
    """Score a training run (directory or checkpoint file); returns the evaluation's artifact directory."""
    pipeline = EndToEndParams(train=train, evaluate=params)
    given = {LABEL_SPACE: Path(label_space), "train": training_run(Path(checkpoint))}
    preflight(pipeline, ["evaluate"], given)
    store = ArtifactStore(artifacts)
    paths = run_stages(pipeline, store, ["evaluate"], given=given, execute=execute_as_task(store))
    return str(paths["evaluate"])


@flow(name="predict-checkpoint", log_prints=True)
def predict_checkpoint_flow(checkpoint: str, params: EndToEndParams = EndToEndParams(),
                            artifacts: str | None = None) -> str:
    """Predict with a training run (directory or checkpoint file) on ``params.predict``'s
    images; returns the prediction's artifact directory."""
    store = ArtifactStore(artifacts)
    paths = run_stages(params, store, ["predict"], given={"train": training_run(Path(checkpoint))},
                       execute=execute_as_task(store))
    return str(paths["predict"])

