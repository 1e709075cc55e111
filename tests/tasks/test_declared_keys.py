"""A stage's key hashes the parameters it declares it reads (DVC's declared params): a field added
to a section it reads changes its key with no edit to the stage, a section it does not read
changes nothing, and the fields it declares unkeyed (how it runs, not what) change nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from tasks.params import (
    ClusterParams,
    DescribeParams,
    EmbedParams,
    EndToEndParams,
    LabelSpaceParams,
    RepairParams,
    VerifyParams,
)
from tasks.stage import StagePlan, UndeclaredParameterError, declared_params

# ---------------------------------------------------------------- the mechanism, on a test double


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Thresholds(Frozen):
    low: float = 0.2
    workers: int = 4  # how, not what: declared unkeyed


class ThresholdsWithANewField(Thresholds):
    high: float = 0.9  # a field its author added, and no stage was edited for


class Other(Frozen):
    k: int = 16


class Pipeline(Frozen):
    thresholds: Thresholds = Thresholds()
    other: Other = Other()


def key(params: Pipeline) -> str:
    """A stage as every stage plans: its version, its declared parameters, its inputs."""
    settings = declared_params(params, ("thresholds",), unkeyed=("thresholds.workers",))
    return StagePlan("double", "1", settings, {"input": "upstream/0123"}).key


def test_a_field_added_to_a_section_the_stage_reads_changes_its_key() -> None:
    assert key(Pipeline(thresholds=ThresholdsWithANewField())) != key(Pipeline())
    assert declared_params(Pipeline(thresholds=ThresholdsWithANewField()), ("thresholds",)) == {
        "thresholds.low": 0.2, "thresholds.workers": 4, "thresholds.high": 0.9}


def test_a_section_the_stage_does_not_read_and_an_unkeyed_field_leave_its_key_alone() -> None:
    assert key(Pipeline(other=Other(k=24))) == key(Pipeline())
    assert key(Pipeline(thresholds=Thresholds(workers=1))) == key(Pipeline())
    assert key(Pipeline(thresholds=Thresholds(low=0.3))) != key(Pipeline())


def test_a_declaration_naming_no_parameter_is_refused() -> None:
    with pytest.raises(UndeclaredParameterError, match="'thresholds.hgh': Thresholds has no field 'hgh'"):
        declared_params(Pipeline(), ("thresholds.hgh",))
    with pytest.raises(UndeclaredParameterError, match="unkeyed 'other.k' is no field of the sections read"):
        declared_params(Pipeline(), ("thresholds",), unkeyed=("other.k",))


# ---------------------------------------------------------------- the label-space stages

# The embedded LLM writes the descriptions, so verify and repair are on and read their sections;
# planning describe looks up no served model (the model is named) and starts no server.
WRITTEN = LabelSpaceParams(describe=DescribeParams(dataset="demo", llm="http://127.0.0.1:9/v1", model="m"))
INPUTS = {"descriptions": "describe/0", "embeddings": "embed/0", "label_space": "cluster/0", "verification": "verify/0"}
Change = Callable[[LabelSpaceParams], LabelSpaceParams]


def _section(name: str, **fields: object) -> Change:
    return lambda space: space.model_copy(update={name: getattr(space, name).model_copy(update=fields)})


CHANGES: dict[str, Change] = {
    "describe.prompt": _section("describe", prompt="aspects"),
    "describe.concurrency": _section("describe", concurrency=8),
    "describe.max_retries": _section("describe", max_retries=1),
    "verify.copied_cosine": _section("verify", copied_cosine=0.97),
    "verify.max_chars": _section("verify", max_chars=99),
    "embed.embedder": _section("embed", embedder="BAAI/bge-small-en-v1.5"),
    "embed.batch_size": _section("embed", batch_size=8),
    "cluster.k": _section("cluster", k=24),
    "repair.min_cosine": _section("repair", min_cosine=0.7),
}
# stage -> the changes that move its key; every other change in CHANGES must leave it alone
MOVES = {
    "describe": {"describe.prompt"},
    # and the prompt: its worked examples are what a copied line is compared against (a derived value)
    "verify": {"verify.copied_cosine", "verify.max_chars", "embed.embedder", "describe.prompt"},
    "embed": {"embed.embedder"},
    "cluster": {"cluster.k"},
    "repair": {"describe.prompt", "verify.copied_cosine", "verify.max_chars", "embed.embedder", "cluster.k",
               "repair.min_cosine"},
}


def _key(stage: str, space: LabelSpaceParams) -> str:
    import importlib

    module = importlib.import_module(f"tasks.label_space.{stage}")
    return module.plan(EndToEndParams(label_space=space), INPUTS).key


@pytest.mark.parametrize("stage", list(MOVES))
def test_a_label_space_stage_is_keyed_by_what_it_declares(stage: str) -> None:
    first = _key(stage, WRITTEN)
    moved = {name for name, change in CHANGES.items() if _key(stage, change(WRITTEN)) != first}
    assert moved == MOVES[stage]


def test_a_stage_that_is_off_reads_nothing_of_what_it_would_use() -> None:
    """Imported descriptions: verify is off and repair makes no round, so neither the LLM's
    settings nor verify's thresholds move their keys (the label space passes through)."""
    imported = LabelSpaceParams(describe=DescribeParams(dataset="demo", descriptors="descriptors.json"),
                                verify=VerifyParams(), repair=RepairParams(), embed=EmbedParams(),
                                cluster=ClusterParams())
    for stage in ("verify", "repair"):
        first = _key(stage, imported)
        for name in ("describe.prompt", "verify.copied_cosine", "cluster.k"):
            assert _key(stage, CHANGES[name](imported)) == first, f"{stage} off moved with {name}"


# ---------------------------------------------------------------- the model stages


def test_train_and_evaluate_are_keyed_by_what_they_declare(demo_root: Path) -> None:
    """train reads its section less the process layout (the world size is added on its own) and
    the image rule when no class is held out; evaluate reads its section and the held-out classes."""
    from tasks.model import evaluate, train
    from tasks.params import EvaluateParams, TrainParams

    inputs = {"label_space": "repair/0", "run": "train/0"}

    def keys(**sections: object) -> tuple[str, str]:
        params = EndToEndParams.model_validate({"train": {"data_root": str(demo_root)}, **sections})
        return train.plan(params, inputs).key, evaluate.plan(params, inputs).key

    first = keys()
    assert keys(label_space={"cluster": {"k": 24}}) == first
    assert keys(train={"data_root": str(demo_root), "launcher": "slurm"}) == first
    assert keys(train={"data_root": str(demo_root), "held_out_images": "ignore"}) == first, "no class held out"
    moved = keys(train={"data_root": str(demo_root), "cfg_options": {"train_cfg.max_iters": 2}})
    assert moved[0] != first[0] and moved[1] != first[1], "both hash the resolved config"
    assert keys(evaluate={"split": "test"})[1] != first[1]
    held_out = {"data_root": str(demo_root), "held_out": ["person"]}
    both = keys(train=held_out)
    assert both[0] != first[0] and both[1] != first[1]
    assert keys(train={**held_out, "held_out_images": "ignore"})[0] != both[0]
    assert keys(train=held_out, evaluate={"calibration": 0.1})[1] != both[1]
    assert TrainParams.model_fields.keys() >= {"nproc_per_node", "nnodes", "launcher", "held_out_images"}
    assert EvaluateParams.model_fields.keys() >= {"split", "calibration"}
