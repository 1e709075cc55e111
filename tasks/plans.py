"""Every stage's key, known before anything runs: the plans of the label space and of the whole
pipeline. Prefect-free, so the CLI checks a command's input before it connects to (or starts)
a Prefect server, and ``prolab status`` explains keys without one."""

from __future__ import annotations

from tasks.cluster import plan_cluster
from tasks.describe import plan_describe
from tasks.embed import plan_embed
from tasks.model_stages import plan_evaluate, plan_train
from tasks.params import EndToEndParams, LabelSpaceParams
from tasks.stage import StagePlan

STAGES = ("describe", "embed", "cluster", "train", "evaluate")


def plan_label_space(params: LabelSpaceParams) -> dict[str, StagePlan]:
    """The describe, embed and cluster plans."""
    described = plan_describe(params.describe)
    embedded = plan_embed(described, params.embed)
    return {"describe": described, "embed": embedded, "cluster": plan_cluster(embedded, params.cluster)}


def plan_pipeline(params: EndToEndParams, through: str = "evaluate") -> dict[str, StagePlan]:
    """The plans of the stages up to ``through``, in DAG order; later stages are not planned,
    so a describe run does not depend on training parameters being valid."""
    plans = plan_label_space(params.label_space)
    if STAGES.index(through) >= STAGES.index("train"):
        plans["train"] = plan_train(plans["cluster"].ref(), params.train)
    if through == "evaluate":
        plans["evaluate"] = plan_evaluate(plans["train"].ref(), plans["cluster"].ref(), params.train,
                                          params.evaluate)
    return {stage: plans[stage] for stage in STAGES[: STAGES.index(through) + 1]}
