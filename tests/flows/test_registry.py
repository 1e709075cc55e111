"""The stage registry is the one declaration of the stages: prefect.yaml deploys exactly its
flows, and each deployment's entrypoint names a flow of the deployment's name."""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect.flows import load_flow_from_entrypoint

from tasks.params import EndToEndParams, PredictParams
from tasks.registry import LABEL_SPACE, LABEL_SPACE_STAGES, STAGES, end_to_end, upstream
from tests.helpers.cli import PROJECT_ROOT

EXPECTED = {
    "end-to-end": "flows/pipeline.py:end_to_end_flow",
    "label-space": "flows/pipeline.py:label_space_flow",
    **{stage.name: f"flows/stages.py:{stage.name}_flow" for stage in STAGES},
}


def deployments() -> dict[str, dict]:
    config = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    return {deployment["name"]: deployment for deployment in config["deployments"]}


def test_prefect_yaml_deploys_the_pipeline_the_label_space_and_every_registered_stage() -> None:
    assert {name: d["entrypoint"] for name, d in deployments().items()} == EXPECTED


def test_every_entrypoint_loads_a_flow_named_like_its_deployment() -> None:
    for name, entrypoint in EXPECTED.items():
        flow = load_flow_from_entrypoint(str(Path(PROJECT_ROOT) / entrypoint))
        assert flow.name == name, entrypoint


def test_every_deployment_checks_its_parameters_against_the_schema() -> None:
    assert all(d.get("enforce_parameter_schema") for d in deployments().values())


def test_stages_read_only_from_stages_before_them() -> None:
    seen: set[str] = set()
    for stage in STAGES:
        assert set(stage.inputs.values()) <= seen, stage.name
        seen.add(stage.name)
    assert upstream("evaluate") == [s.name for s in STAGES if s.name != "predict"]
    assert upstream("predict") == [s.name for s in STAGES if s.name != "evaluate"]
    assert LABEL_SPACE == LABEL_SPACE_STAGES[-1] and upstream(LABEL_SPACE) == list(LABEL_SPACE_STAGES)


def test_the_end_to_end_flow_predicts_only_when_given_images(tmp_path: Path) -> None:
    assert "predict" not in end_to_end(EndToEndParams())
    with_images = EndToEndParams(predict=PredictParams(images=[tmp_path]))
    assert end_to_end(with_images) == [s.name for s in STAGES]


def test_a_stage_with_a_status_note_declares_it() -> None:
    # prolab status imports only the modules that declare notes: one that forgot would lose its note
    assert {stage.name for stage in STAGES if hasattr(stage.module, "status_note")} == \
        {stage.name for stage in STAGES if stage.notes}
