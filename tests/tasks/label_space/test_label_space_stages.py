"""describe (import) -> embed -> cluster as plain functions: parity with the paper's procedure,
caching proven by counts, and recomputation of damaged artifacts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from prolab_models.label_space import load_label_space
from tasks.label_space import embed as embed_module
from tasks.registry import LABEL_SPACE_STAGES
from tasks.store import ArtifactStore
from tests.helpers.cli import CITYSCAPES, shared_path
from tests.helpers.label_space_stages import EncodeCounter, build


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def test_partition_equals_reference_procedure(store: ArtifactStore) -> None:
    descriptors = shared_path(CITYSCAPES)
    label_space = load_label_space(build(descriptors, store)["cluster"])

    # The paper's procedure, written out independently: lower-case, mean pooling, L2 norm, KMeans.
    from sentence_transformers import SentenceTransformer

    data = json.loads(descriptors.read_text())
    texts = [t.lower() for texts in data.values() for t in texts]
    model = SentenceTransformer(str(embed_module.resolve_embedder("all-MiniLM-L6-v2")), device="cpu")
    assert model[1].get_config_dict()["pooling_mode"] == "mean"
    vectors = model.encode(texts, normalize_embeddings=True)
    reference = KMeans(n_clusters=32, random_state=0, n_init="auto").fit_predict(vectors)

    import pandas as pd

    ours = pd.read_parquet(label_space.path / "descriptions.parquet")["property_id"].to_numpy()
    assert adjusted_rand_score(reference, ours) == 1.0
    assert label_space.classes == list(data)
    assert label_space.centres.shape == (32, 384) and label_space.multi_hot.shape == (19, 32)
    expected = np.zeros((19, 32))
    class_of_text = [ci for ci, texts in enumerate(data.values()) for _ in texts]
    expected[class_of_text, reference] = 1
    # Same partition up to relabelling: compare the class x property matrices' column sets.
    assert sorted(map(tuple, expected.T)) == sorted(map(tuple, label_space.multi_hot.T))


def test_unchanged_rerun_encodes_nothing_and_edit_reembeds_one_class(
    store: ArtifactStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = shared_path(CITYSCAPES)
    descriptors = tmp_path / "descriptors.json"
    shutil.copy(source, descriptors)
    counter = EncodeCounter(monkeypatch)
    first = build(descriptors, store)
    n_unique = len({t.lower() for texts in json.loads(source.read_text()).values() for t in texts})
    assert len(counter.texts) == n_unique

    counter.texts.clear()
    assert build(descriptors, store) == first
    assert counter.texts == []  # zero encoder calls

    data = json.loads(descriptors.read_text())
    data["car"] = ["Four wheels and a metal body", "Painted bright red", data["car"][0]]
    descriptors.write_text(json.dumps(data))
    edited = build(descriptors, store)
    assert counter.texts == ["four wheels and a metal body", "painted bright red"]
    assert all(edited[stage] != first[stage] for stage in LABEL_SPACE_STAGES)
    assert load_label_space(edited["cluster"]).multi_hot[13].sum() >= 1


def test_deleted_or_damaged_artifact_is_recomputed(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    descriptors = shared_path(CITYSCAPES)
    first = build(descriptors, store, k=8)
    shutil.rmtree(first["cluster"])
    parquet = first["embed"] / "embeddings.parquet"
    parquet.write_bytes(parquet.read_bytes()[:-10] + b"0123456789")
    again = build(descriptors, store, k=8)
    assert again == first
    assert store.verify() == {}
    assert load_label_space(again["cluster"]).num_properties == 8


def test_the_embedded_model_is_asked_with_the_aspects_prompt_and_chat_backends_with_the_few_shot_one() -> None:
    from tasks.label_space import describe
    from tasks.label_space.llm.prompts import ASPECTS_PROMPT_VERSION, PROMPT_VERSION
    from tasks.params import DescribeParams, EndToEndParams, LabelSpaceParams

    def plan(**settings: str) -> str:
        params = EndToEndParams(label_space=LabelSpaceParams(describe=DescribeParams(dataset="demo", **settings)))
        return describe.plan(params, {}).params["prompt_version"]

    assert plan(llm="local") == ASPECTS_PROMPT_VERSION
    assert plan(llm="http://127.0.0.1:8000/v1", model="m") == PROMPT_VERSION
    assert plan(llm="local", prompt="few-shot") == PROMPT_VERSION, "the prompt named wins"


def test_max_retries_reaches_the_client_and_leaves_the_key_alone() -> None:
    """How often a call is retried changes no answer, so it is a setting of the client, not of the plan."""
    from tasks.label_space import describe
    from tasks.params import DescribeParams, EndToEndParams, LabelSpaceParams

    asked = DescribeParams(dataset="demo", llm="http://127.0.0.1:8000/v1", model="m", max_retries=1)
    with describe.llm_settings(asked) as settings:
        assert settings.max_retries == 1
    plans = [describe.plan(EndToEndParams(label_space=LabelSpaceParams(describe=asked.model_copy(update=update))), {})
             for update in ({}, {"max_retries": 6})]
    assert plans[0].key == plans[1].key
