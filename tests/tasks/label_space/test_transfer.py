"""New classes from words: descriptions to trained properties, the floor, the held-out label space
and the controls' descriptions, on a label space the stages built (all-MiniLM-L6-v2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prolab_models.label_space import DESCRIPTIONS, load_label_space
from tasks.label_space.embed import text_embedder
from tasks.label_space.transfer import (
    TransferError,
    check_held_out,
    class_rows,
    held_out_key,
    hold_out,
    label_space_descriptions,
    random_word_descriptions,
    rank_properties,
    require_expressed,
    swapped_descriptions,
)
from tasks.params import SIMILARITY_FLOOR
from tasks.store import ArtifactStore
from tests.helpers.transfer_runs import DEMO_DESCRIPTIONS


@pytest.fixture(scope="module")
def embed(transfer_store: ArtifactStore):
    return text_embedder("all-MiniLM-L6-v2", transfer_store.embedding_cache)


def test_a_trained_classes_own_descriptions_give_back_its_row(described_label_space: Path, embed) -> None:
    space = load_label_space(described_label_space)
    rows = class_rows(label_space_descriptions(space.path), space.centres, embed)
    np.testing.assert_array_equal(rows.multi_hot, space.multi_hot)
    assigned = pd.read_parquet(space.path / DESCRIPTIONS).sort_values(["class_index", "description_index"])
    assert list(rows.assignments["property_id"]) == list(assigned["property_id"])


def test_a_description_under_the_floor_is_unexpressed_and_a_class_without_any_is_refused_by_name(
        described_label_space: Path, embed) -> None:
    space = load_label_space(described_label_space)
    rows = class_rows({"pasta": ["a plate of spaghetti", "a keyboard with keys"],
                       "lorry": ["metal body of a vehicle", "a plate of spaghetti"]}, space.centres, embed)
    unexpressed = rows.assignments[rows.assignments["property_id"] < 0]
    assert set(unexpressed["text"]) == {"a plate of spaghetti", "a keyboard with keys"}
    assert (unexpressed["similarity"] < SIMILARITY_FLOOR).all()
    assert rows.unexpressed_classes() == ["pasta"] and rows.row("lorry").sum() == 1
    with pytest.raises(TransferError, match=r"class 'pasta': none of its 2 descriptions reaches the similarity "
                                            r"floor 0\.40 to a trained property \(best 0\.\d\d"):
        require_expressed(rows, SIMILARITY_FLOOR)


def test_queries_rank_properties_by_cosine(described_label_space: Path, embed) -> None:
    space = load_label_space(described_label_space)
    ranked = rank_properties(embed(["four black wheels"])[0], space.centres, 3)
    wheels = pd.read_parquet(space.path / DESCRIPTIONS).set_index("text").loc["four black wheels", "property_id"]
    assert ranked[0][0] == wheels and len(ranked) == 3
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)


@pytest.mark.parametrize("held_out, message", [
    (["persn"], "--held-out 'persn': not a class of the demo (sky, building"),
    (["car", "car"], "--held-out: 'car' named more than once"),
    (list(DEMO_DESCRIPTIONS), "--held-out: every class of the demo is held out; keep at least one to train on"),
])
def test_held_out_classes_are_checked_against_the_dataset(held_out: list[str], message: str) -> None:
    with pytest.raises(TransferError) as error:
        check_held_out(held_out, list(DEMO_DESCRIPTIONS), "the demo")
    assert message in str(error.value)


def test_the_held_out_label_space_has_neither_the_class_nor_its_descriptions(described_label_space: Path, embed,
                                                                             tmp_path: Path) -> None:
    source = load_label_space(described_label_space)
    hold_out(source, ["person"], tmp_path, embed)
    derived = load_label_space(tmp_path)
    assert derived.classes == [c for c in source.classes if c != "person"]
    assert derived.num_properties == source.num_properties and derived.embedder == source.embedder
    assert derived.key == held_out_key(source.key, ["person"]) != source.key
    texts = set(pd.read_parquet(tmp_path / DESCRIPTIONS)["text"])
    assert texts == {t for c, lines in DEMO_DESCRIPTIONS.items() if c != "person" for t in lines}
    assert json.loads((tmp_path / "label_space.json").read_text())["held_out"] == ["person"]


def test_the_controls_descriptions(embed) -> None:
    words = random_word_descriptions(DEMO_DESCRIPTIONS, ["person", "car"], seed=0)
    assert words == random_word_descriptions(DEMO_DESCRIPTIONS, ["person", "car"], seed=0)
    vocabulary = {w for lines in DEMO_DESCRIPTIONS.values() for line in lines for w in line.lower().replace(",", "").split()}
    for name in ("person", "car"):
        assert [len(line.split()) for line in words[name]] == [len(line.split()) for line in DEMO_DESCRIPTIONS[name]]
        assert {w for line in words[name] for w in line.split()} <= vocabulary
        assert words[name] != DEMO_DESCRIPTIONS[name]
    assert swapped_descriptions(DEMO_DESCRIPTIONS, ["car", "person"], embed) == {"car": "person", "person": "car"}
    (donor,) = swapped_descriptions(DEMO_DESCRIPTIONS, ["person"], embed).values()
    assert donor in DEMO_DESCRIPTIONS and donor != "person"
