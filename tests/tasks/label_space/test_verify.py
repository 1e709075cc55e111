"""verify_descriptions on crafted descriptions and on the paper's GPT-3.5 descriptions (../shared),
with the real embedder (all-MiniLM-L6-v2)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.label_space.embed import embed_texts, load_encoder
from tasks.label_space.llm.prompts import EXAMPLES
from tasks.label_space.verify import REASONS, VerifyError, flagged_counts, kept_descriptions, verify_descriptions
from tasks.params import VerifyParams
from tests.helpers.cli import CITYSCAPES, shared_path

GOOD = {
    "sky": ["blue or grey expanse above the horizon", "white clouds drifting overhead", "bright in daylight"],
    "car": ["four wheels with black rubber tyres", "metal body with glass windows", "parked along streets"],
    "tree": ["tall brown trunk with branches", "green leaves forming a crown", "grows in parks and along avenues"],
}
MISATTRIBUTED = "a tall tree with bark and green leaves"  # says "tree": 0.64 to "a photo of a tree"
OTHER_CLASS = "tall trunk covered in bark with green leaves"  # the tree's parts: 0.54 to it, under the floor


@pytest.fixture(scope="module")
def embed():
    """all-MiniLM-L6-v2 as the embed stage loads it (mean pooling, unit vectors), loaded once."""
    encoder = load_encoder("all-MiniLM-L6-v2")
    return lambda texts: encoder.encode(list(texts), convert_to_numpy=True)


def test_the_pipelines_cached_embedding_function_serves_verify(tmp_path: Path) -> None:
    embed = partial(embed_texts, embedder="all-MiniLM-L6-v2", cache_dir=tmp_path)
    table = verify_descriptions({"car": ["four wheels", "Four wheels."], "sky": ["blue"]}, embed)
    assert list(table["reason"]) == [None, "near_duplicate", None]


def _with(extra: dict[str, list[str]]) -> dict[str, list[str]]:
    return {name: GOOD[name] + extra.get(name, []) for name in GOOD}


def _row(table: pd.DataFrame, name: str, text: str) -> pd.Series:
    (row,) = table[(table["class"] == name) & (table["text"] == text)].itertuples(index=False)
    return pd.Series(row._asdict())


def test_good_descriptions_are_all_kept_one_row_each(embed) -> None:
    table = verify_descriptions(GOOD, embed, examples=EXAMPLES)
    assert list(table.columns[:6]) == ["class", "index", "text", "kept", "reason", "score"]
    assert len(table) == 9 and table["kept"].all() and table["reason"].isna().all()
    assert list(table["index"]) == [0, 1, 2] * 3
    assert kept_descriptions(table) == (GOOD, [])


def test_a_line_copied_from_another_categorys_worked_example_is_flagged(embed) -> None:
    copied = "May carry a basket, lights, mudguards or a bell."  # bicycle's example, said of a car
    table = verify_descriptions(_with({"car": [copied]}), embed, examples=EXAMPLES)
    row = _row(table, "car", copied)
    assert (row["kept"], row["reason"], row["points_to"], row["score"]) == (False, "copied", "bicycle", 1.0)
    assert table["kept"].sum() == 9


def test_a_reworded_example_line_is_copied_by_its_embedding(embed) -> None:
    reworded = "about as tall as a person's waist, and often bolted to the ground"
    examples = {"bench": ["about as tall as a person's waist, often bolted to the ground"]}
    table = verify_descriptions(_with({"sky": [reworded]}), embed, examples=examples)
    row = _row(table, "sky", reworded)
    assert (row["reason"], row["points_to"]) == ("copied", "bench") and 0.9 <= row["score"] < 1.0


def test_a_class_may_repeat_its_own_worked_example(embed) -> None:
    own = list(EXAMPLES["bicycle"][:3])
    table = verify_descriptions({"bicycle": own, "car": GOOD["car"]}, embed, examples=EXAMPLES)
    assert table["kept"].all()


def test_a_line_about_another_class_is_misattributed_and_names_it(embed) -> None:
    table = verify_descriptions(_with({"car": [MISATTRIBUTED]}), embed)
    row = _row(table, "car", MISATTRIBUTED)
    assert (row["kept"], row["reason"], row["points_to"]) == (False, "misattributed", "tree")
    assert row["score"] >= VerifyParams().misattributed_margin


def test_a_line_that_is_the_class_name_leaks_it(embed) -> None:
    table = verify_descriptions(_with({"car": ["a car"], "tree": ["Trees"]}), embed)
    for name, text in (("car", "a car"), ("tree", "Trees")):
        row = _row(table, name, text)
        assert row["reason"] == "leaks_class_name" and row["score"] >= 0.85


def test_near_duplicates_keep_the_first_and_point_to_it(embed) -> None:
    twins = ["metal body with glass windows.", "Metal body with glass windows and doors"]
    table = verify_descriptions(_with({"car": twins}), embed)
    first, second = (_row(table, "car", text) for text in twins)
    assert first["reason"] == "near_duplicate" and first["duplicate_of"] == 1
    assert second["reason"] == "near_duplicate" and second["score"] >= 0.9
    assert kept_descriptions(table)[0]["car"] == GOOD["car"]


def test_a_question_is_flagged_whatever_its_wording(embed) -> None:
    echo = "What does a sky look like that a person does not? Answer with 3 to"  # Gemma echoing repair
    table = verify_descriptions(_with({"sky": [echo]}), embed)
    assert (_row(table, "sky", echo)["reason"], table["kept"].sum()) == ("question", 9)
    assert verify_descriptions(_with({"sky": [echo]}), embed, VerifyParams(flag_questions=False))["kept"].all()


def test_a_line_in_another_script_is_flagged_with_its_latin_share(embed) -> None:
    table = verify_descriptions(_with({"sky": ["で購入する"], "car": ["に通りのmodel"],
                                       "tree": ["façade-like crown of pale green leaves"]}), embed)
    assert (_row(table, "sky", "で購入する")["reason"], _row(table, "sky", "で購入する")["score"]) == ("other_script", 0.0)
    mixed = _row(table, "car", "に通りのmodel")
    assert mixed["reason"] == "other_script" and mixed["score"] == pytest.approx(5 / 9)
    assert _row(table, "tree", "façade-like crown of pale green leaves")["kept"], "accented Latin letters are Latin"
    assert verify_descriptions(_with({"sky": ["で購入する"]}), embed, VerifyParams(min_latin_share=None))["kept"].all()


def test_too_long_is_off_by_default_and_flags_lines_over_the_limit(embed) -> None:
    long_line = "four wheels with black rubber tyres, hubcaps, bolts and a spare in the boot"
    assert verify_descriptions(_with({"car": [long_line]}), embed)["kept"].all()
    table = verify_descriptions(_with({"car": [long_line]}), embed, VerifyParams(max_chars=60))
    row = _row(table, "car", long_line)
    assert (row["reason"], row["score"]) == ("too_long", float(len(long_line)))
    assert flagged_counts(table) == {reason: int(reason == "too_long") for reason in REASONS}


@pytest.mark.parametrize(("line", "off"), [
    (MISATTRIBUTED, {"misattributed_margin": None, "other_class_margin": None}),  # other_class flags it too
    (OTHER_CLASS, {"other_class_margin": None}),
])
def test_a_rule_set_to_none_flags_nothing(embed, line: str, off: dict) -> None:
    assert not verify_descriptions(_with({"car": [line]}), embed)["kept"].all()
    assert verify_descriptions(_with({"car": [line]}), embed, VerifyParams(**off))["kept"].all()


def test_a_line_only_faintly_near_another_class_is_not_misattributed(embed) -> None:
    row = _row(verify_descriptions(_with({"car": [MISATTRIBUTED]}), embed), "car", MISATTRIBUTED)
    assert row["reason"] == "misattributed"
    strict = VerifyParams(misattributed_min_cosine=0.95, other_class_margin=None)  # must be near-certain
    assert verify_descriptions(_with({"car": [MISATTRIBUTED]}), embed, strict)["kept"].all()


def test_a_line_describing_another_classs_parts_is_other_class_though_far_from_its_name(embed) -> None:
    table = verify_descriptions(_with({"car": [OTHER_CLASS]}), embed)
    row = _row(table, "car", OTHER_CLASS)  # misattributed is tried first and let it pass
    assert (row["kept"], row["reason"], row["points_to"]) == (False, "other_class", "tree")
    assert row["score"] >= VerifyParams().other_class_margin and table["kept"].sum() == 9
    strict = VerifyParams(other_class_sentence_margin=0.5)  # must then be far nearer "a photo of a tree" too
    assert verify_descriptions(_with({"car": [OTHER_CLASS]}), embed, strict)["kept"].all()


def test_a_class_with_one_line_has_no_descriptions_to_compare_it_with(embed) -> None:
    table = verify_descriptions({"car": [OTHER_CLASS], "sky": GOOD["sky"], "tree": GOOD["tree"]}, embed)
    assert table["kept"].all()


# Lines plainly about another Cityscapes class, planted into the paper's Cityscapes descriptions:
# (planted into, line, the class it describes). The first two were among the lines the defaults
# were chosen on (issue 28); the others were written afterwards.
PLANTED = [
    ("car", "has handlebars and pedals", "bicycle"),
    ("car", "a tall thin metal post", "pole"),
    ("road", "has leaves and branches", "vegetation"),
    ("pole", "a two-wheeled motor vehicle with an engine and exhaust", "motorcycle"),
    ("terrain", "red, yellow and green lamps stacked in a housing", "traffic light"),
    ("wall", "blue with white clouds above the horizon", "sky"),
    ("vegetation", "a person sitting on a bicycle or motorcycle", "rider"),
    ("sidewalk", "a long train of carriages pulled along railway tracks", "train"),
    ("sky", "grass and soil beside the road", "terrain"),
    ("building", "has a windshield, four doors and a trunk", "car"),
    ("truck", "walks on two legs and wears clothes", "person"),
    ("bus", "a triangular or round plate with a symbol, telling drivers what to do", "traffic sign"),
]


def test_lines_planted_from_other_cityscapes_classes_are_flagged_naming_the_class_they_describe(embed) -> None:
    descriptions = json.loads(shared_path(CITYSCAPES).read_text())
    for into, line, _ in PLANTED:
        descriptions[into] = [*descriptions[into], line]
    table = verify_descriptions(descriptions, embed)
    rows = {line: _row(table, into, line) for into, line, _ in PLANTED}
    for _, line, about in PLANTED[:3]:
        assert (rows[line]["reason"], rows[line]["points_to"]) == ("other_class", about), line
    caught = [line for _, line, about in PLANTED if rows[line]["points_to"] == about]
    # 8 of 12 at the defaults: "beside the road" points to road; the car's parts in building, the
    # person in truck and the sign in bus are kept (sentence margins 0.15, 0.14, 0.09 < 0.18).
    assert len(caught) >= 8, caught
    papers = table[~table["text"].isin(rows)]
    assert (~papers["kept"]).mean() <= 0.08


@pytest.mark.parametrize("dataset", [  # the larger three embed 600-1700 lines each: a minute on a busy CPU
    "cityscapes_bdd", *(pytest.param(name, marks=pytest.mark.slow)
                        for name in ("ade20k", "coco_stuff_164k", "pascal_context_59"))])
def test_the_defaults_flag_at_most_8_percent_of_the_papers_gpt35_lines(embed, dataset: str) -> None:
    path = shared_path(f"data/prolab_descriptors/{dataset}_gpt3.5.json")
    table = verify_descriptions(json.loads(path.read_text()), embed, examples=EXAMPLES)
    assert (~table["kept"]).mean() <= 0.08, flagged_counts(table)


def test_texts_are_embedded_lower_cased(embed) -> None:
    seen: list[str] = []

    def recording(texts):
        seen.extend(texts)
        return embed(texts)

    verify_descriptions({"Sky": ["Blue Expanse"], "Car": ["Four Wheels"]}, recording)
    assert seen and all(text == text.lower() for text in seen)


def test_a_class_with_every_line_flagged_keeps_them_all_and_is_named(embed) -> None:
    descriptions = {"car": ["a car", "Cars"], "tree": GOOD["tree"]}
    table = verify_descriptions(descriptions, embed)
    assert list(table.loc[table["class"] == "car", "reason"]) == ["leaks_class_name"] * 2
    assert kept_descriptions(table) == (descriptions, ["car"]), "a class without lines would lose the class"
    flagged = verify_descriptions({"car": ["a car", "four wheels"], "tree": GOOD["tree"]}, embed)
    assert kept_descriptions(flagged) == ({"car": ["four wheels"], "tree": GOOD["tree"]}, [])
    assert kept_descriptions(flagged, keep_flagged=True)[0]["car"] == ["a car", "four wheels"]


def test_an_embedding_function_returning_the_wrong_number_of_vectors_is_an_error() -> None:
    with pytest.raises(VerifyError, match="returned 1 vectors"):
        verify_descriptions(GOOD, lambda texts: np.ones((1, 4)))


def test_a_class_sentence_without_a_slot_is_refused() -> None:
    with pytest.raises(ValueError, match="class_sentence must hold one"):
        VerifyParams(class_sentence="a photo")
