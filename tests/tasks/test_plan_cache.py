"""Remembered plans: reused while nothing they read has changed, never once something has."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from prolab_models.configs import reads_environment
from tasks.label_space import describe
from tasks.label_space.descriptors import DescriptorError
from tasks.params import EndToEndParams
from tasks.plan_cache import PLANS, remembered_plan
from tasks.registry import plan_stages
from tasks.stage import StagePlan
from tasks.store import ArtifactStore


def _descriptors(path: Path, text: str, age_s: float = 60) -> Path:
    path.write_text(json.dumps({"car": [text, "wheels"], "road": ["grey", "flat"]}))
    past = time.time() - age_s
    os.utime(path, (past, past))
    return path


@pytest.fixture
def planned(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The describe plans actually made (not read back)."""
    made: list[str] = []
    original = describe.plan

    def counting(params: EndToEndParams, inputs: dict[str, str]) -> StagePlan:
        made.append(str(params.label_space.describe.descriptors))
        return original(params, inputs)

    monkeypatch.setattr(describe, "plan", counting)
    return made


def _plan(store: ArtifactStore, descriptors: Path) -> StagePlan:
    params = EndToEndParams.model_validate({"label_space": {"describe": {"descriptors": str(descriptors)}}})
    return plan_stages(params, ["describe"], store=store)["describe"]


def test_a_plan_is_read_back_until_its_source_changes(tmp_path: Path, planned: list[str]) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    descriptors = _descriptors(tmp_path / "d.json", "red")
    first = _plan(store, descriptors)
    assert _plan(store, descriptors) == first and first.sources == (str(descriptors.resolve()),)
    assert len(planned) == 1, "the second plan was read back"

    _descriptors(descriptors, "blue")  # an edit: another content, another mtime
    edited = _plan(store, descriptors)
    assert len(planned) == 2 and edited.key != first.key
    descriptors.unlink()
    with pytest.raises(DescriptorError, match="no such file"):  # a source gone: planned afresh, refused as before
        _plan(store, descriptors)


def test_a_source_written_while_planning_is_not_trusted_later(tmp_path: Path, planned: list[str]) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    descriptors = _descriptors(tmp_path / "d.json", "red", age_s=0)  # as fresh as the plan
    _plan(store, descriptors)
    _plan(store, descriptors)
    assert len(planned) == 2 and not (store.root / PLANS).exists()


def test_a_plan_that_read_the_environment_is_made_every_time(tmp_path: Path) -> None:
    made = []

    def make() -> StagePlan:
        made.append(1)
        return StagePlan("train", "1", {}, {}, sources=None)

    params = EndToEndParams()
    for _ in range(2):
        remembered_plan(tmp_path, "train", params, {}, make)
    assert len(made) == 2
    config = tmp_path / "config.py"
    config.write_text("data_root = '{{ $DATA_ROOT:/data }}'\n")
    assert reads_environment([config])
    config.write_text("_base_ = ['base.py']\nmodel = dict(norm_cfg={{_base_.norm_cfg}})\n")
    assert not reads_environment([config]), "a _base_ reference is not the environment"
