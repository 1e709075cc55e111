"""The verify and repair stages in the pipeline, with a fake OpenAI-compatible LLM on 127.0.0.1:
each verify rule on crafted lines, thresholds in the key (changing one reruns verify and what
follows, nothing before it), and the repair loop's requests, cache, rounds and verification."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from data.demo import DEMO_CLASSES
from tasks.files import MANIFEST
from tasks.label_space.llm.prompts import EXAMPLES
from tasks.params import DescribeParams, EndToEndParams, LabelSpaceParams, RepairParams, VerifyParams
from tasks.registry import LABEL_SPACE_STAGES, plan_stages, run_stages
from tasks.store import ArtifactStore
from tests.helpers.fake_llm import FakeLLM

CRAFTED = {
    "sky": ["blue expanse above the horizon", "white clouds drifting overhead", "sky",
            "the blue expanse above the horizon",
            "tall brown trunk covered in bark with green leaves on its branches"],
    "car": ["four wheels with black rubber tyres", "metal body with glass windows", EXAMPLES["bench"][2],
            "a tall tree with bark and green leaves",
            "a long line that goes on about headlights, mirrors, doors, a bonnet and a boot"],
}


def _reply(category: str) -> str:
    lines = CRAFTED.get(category, [f"{category} shape", f"{category} colour", f"{category} texture"])
    return "\n".join(f"- {line}" for line in lines)


@pytest.fixture
def fake_llm():
    with FakeLLM(reply=_reply) as fake:
        yield fake


def _params(fake: FakeLLM, **label_space: object) -> EndToEndParams:
    describe = DescribeParams(dataset="demo", llm=fake.base_url, model="fake-model")
    return EndToEndParams(label_space=LabelSpaceParams(describe=describe, **label_space))


def test_each_verify_rule_flags_its_crafted_line_and_the_manifest_records_the_thresholds(
        fake_llm: FakeLLM, tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    params = _params(fake_llm, verify=VerifyParams(max_chars=70))
    paths = run_stages(params, store, ["describe", "verify"])
    table = pd.read_parquet(paths["verify"] / "verification.parquet")
    reasons = {(row["class"], row["text"]): row["reason"] for _, row in table.iterrows()}
    assert reasons[("sky", "sky")] == "leaks_class_name"
    assert reasons[("sky", "the blue expanse above the horizon")] == "near_duplicate"
    assert reasons[("car", EXAMPLES["bench"][2])] == "copied"
    assert reasons[("car", CRAFTED["car"][3])] == "misattributed"
    assert reasons[("car", CRAFTED["car"][4])] == "too_long"
    assert reasons[("sky", CRAFTED["sky"][4])] == "other_class"
    assert pd.isna(reasons[("car", "four wheels with black rubber tyres")])
    pointed = table.set_index("text").loc[[CRAFTED["car"][3], CRAFTED["sky"][4]], "points_to"]
    assert list(pointed) == ["tree", "tree"]
    kept = json.loads((paths["verify"] / "descriptions.json").read_text())
    assert kept["car"] == CRAFTED["car"][:2] and kept["sky"] == CRAFTED["sky"][:2], "flagged lines are dropped"
    manifest = json.loads((paths["verify"] / MANIFEST).read_text())
    recorded = manifest["params"]
    assert recorded["label_space.verify.max_chars"] == 70 and recorded["label_space.verify.near_duplicate_cosine"] == 0.9
    assert manifest["params"]["examples"], "the few-shot prompt's examples are what copying is checked against"

    keeping = _params(fake_llm, verify=VerifyParams(max_chars=70, keep_flagged=True))
    kept_all = json.loads((run_stages(keeping, store, ["describe", "verify"])["verify"] / "descriptions.json")
                          .read_text())
    assert kept_all["car"] == CRAFTED["car"], "--keep-flagged keeps them; the table still flags them"


def test_changing_a_threshold_reruns_verify_and_what_follows_nothing_before_it(fake_llm: FakeLLM,
                                                                                tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    first = run_stages(_params(fake_llm, repair=RepairParams(rounds=0)), store, LABEL_SPACE_STAGES)
    asked = len(fake_llm.asked())
    changed = _params(fake_llm, verify=VerifyParams(near_duplicate_cosine=0.95), repair=RepairParams(rounds=0))
    plans = plan_stages(changed, LABEL_SPACE_STAGES)
    assert [name for name, plan in plans.items() if store.get(name, plan.key) is None] == list(LABEL_SPACE_STAGES[1:])
    second = run_stages(changed, store, LABEL_SPACE_STAGES)
    assert second["describe"] == first["describe"] and len(fake_llm.asked()) == asked, "the LLM is not asked again"
    assert all(second[name] != first[name] for name in LABEL_SPACE_STAGES[1:])


def _colliding_reply(category: str) -> str:
    """sky and sidewalk described alike; repair answers for each ordered pair, with garbage as
    Gemma-3-270M wrote it on CamVid: a line about another class, its question echoed back, Japanese."""
    answers = {
        "sky|sidewalk": ["bright blue with white clouds", "the sun shining high above", "a red car parked on a road",
                         "What does a sky look like that a person does not? Answer with 3 to"],
        "sidewalk|sky": ["paved with square concrete slabs", "a raised kerb along the road", "で購入する"],
    }
    if category in answers:
        return "\n".join(f"- {line}" for line in answers[category])
    if category in ("sky", "sidewalk"):
        return "- flat grey surface\n- seen in street scenes\n- wide open area"
    return _reply(category)


def test_repair_asks_each_ordered_pair_once_a_round_adds_what_verifies_and_caches_the_answers(
        tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    with FakeLLM(reply=_colliding_reply) as fake:
        params = EndToEndParams(label_space=LabelSpaceParams(
            describe=DescribeParams(dataset="demo", llm=fake.base_url, model="fake-model"),
            cluster={"k": 8}, repair=RepairParams(rounds=1)))
        paths = run_stages(params, store, LABEL_SPACE_STAGES)
        report = json.loads((paths["repair"] / "repair_report.json").read_text())
        assert report["rounds_run"] == 1 and [1, "sky", "sidewalk"] in report["pairs"]
        assert len(fake.asked("sky|sidewalk")) == 1 and len(fake.asked("sidewalk|sky")) == 1
        assert report["llm_requests"] == 2 * len(report["pairs"])
        descriptions = pd.read_parquet(paths["repair"] / "descriptions.parquet")
        sky = set(descriptions.loc[descriptions["class_name"] == "sky", "text"])
        assert "bright blue with white clouds" in sky
        assert "a red car parked on a road" not in sky, "a line about another class is verified away"
        answered = pd.read_parquet(paths["repair"] / "repair.parquet").set_index("line")["added"]
        garbage = ["a red car parked on a road", "What does a sky look like that a person does not? Answer with 3 to",
                   "で購入する"]
        assert not answered[garbage].any(), "garbage is verified away, not added"

        before = len(fake.asked())
        (paths["repair"] / MANIFEST).unlink()  # a damaged copy: recomputed, from the cached answers
        again = run_stages(params, store, LABEL_SPACE_STAGES)
        assert len(fake.asked()) == before and again["repair"] == paths["repair"]
        assert json.loads((again["repair"] / "repair_report.json").read_text())["llm_requests"] == 0

        two_rounds = params.model_copy(update={"label_space": params.label_space.model_copy(
            update={"repair": RepairParams(rounds=2)})})
        report = json.loads((run_stages(two_rounds, store, LABEL_SPACE_STAGES)["repair"] / "repair_report.json")
                            .read_text())
        assert report["rounds_run"] <= 2 and len(fake.asked("sky|sidewalk")) == 1, "answers are cached per pair"


def test_repair_is_off_for_a_descriptors_file_and_passes_the_label_space_through(tmp_path: Path) -> None:
    descriptors = tmp_path / "demo.json"
    descriptors.write_text(json.dumps({name: [f"{name} shape", f"{name} colour"] for name in DEMO_CLASSES}))
    params = EndToEndParams(label_space=LabelSpaceParams(describe=DescribeParams(descriptors=descriptors),
                                                         cluster={"k": 8}))
    paths = run_stages(params, ArtifactStore(tmp_path / "store"), LABEL_SPACE_STAGES)
    assert json.loads((paths["repair"] / "repair_report.json").read_text())["rounds"] == 0
    for name in ("class_properties.parquet", "properties.parquet", "label_space.json"):
        assert (paths["repair"] / name).read_bytes() == (paths["cluster"] / name).read_bytes()
    assert not json.loads((paths["verify"] / "verify_report.json").read_text())["enabled"]
