"""Repair's building blocks: the pairs to repair, the pairwise figures, the prompt, the parser, the loop."""

from __future__ import annotations

import numpy as np

from tasks.label_space.llm.prompts import REPAIR_PROMPT_VERSION, build_repair_messages, repair_prompt
from tasks.label_space.llm.replies import parse_repair_reply
from tasks.label_space.repair import near_pairs, repair_label_space

CLASSES = ["sky", "sidewalk", "road", "car"]
#                      p0 p1 p2 p3 p4 p5 p6 p7
MULTI_HOT = np.array([[1, 1, 1, 0, 0, 0, 0, 0],   # sky: a subset of sidewalk's
                      [1, 1, 1, 1, 0, 0, 0, 0],   # sidewalk
                      [0, 1, 1, 1, 1, 0, 0, 0],   # road: 2 properties from sidewalk
                      [0, 0, 0, 0, 0, 1, 1, 1]])  # car: nothing shared


def test_the_pairs_to_repair_are_those_near_by_cosine_or_hamming() -> None:
    assert near_pairs(MULTI_HOT, CLASSES, 0.8, 1) == [("sky", "sidewalk")]  # cosine 0.87, Hamming 1
    assert near_pairs(MULTI_HOT, CLASSES, 0.7, 0) == [("sky", "sidewalk"), ("sidewalk", "road")]  # 0.87, 0.75
    assert near_pairs(MULTI_HOT, CLASSES, 1.0, 0) == []


def test_the_repair_prompt_asks_about_the_target_against_the_other() -> None:
    system, user = build_repair_messages("sky", "sidewalk")
    assert system["role"] == "system" and user["role"] == "user"
    assert "a sky" in user["content"] and "a sidewalk" in user["content"] and '"- "' in user["content"]
    assert REPAIR_PROMPT_VERSION


def test_the_repair_parser_keeps_list_items_that_do_not_name_the_other_class() -> None:
    reply = ("Here is how they differ:\n- bright blue with white clouds\n- unlike a sidewalk, it is above us\n"
             "- Sidewalks are grey\n- no edges, spans the horizon\n")
    assert parse_repair_reply(reply, "sky", "sidewalk") == ["bright blue with white clouds",
                                                            "no edges, spans the horizon"]
    assert parse_repair_reply("I cannot answer that.", "sky", "sidewalk") == []


class _Loop:
    """A tiny label space whose 'clustering' is a lookup: each known line is one property."""

    PROPERTY = {"grey": 0, "flat": 1, "blue": 2, "clouds above": 3, "curbs at its edge": 4, "wheels": 5}

    def __init__(self, answers: dict[tuple[str, str], list[str]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str]] = []

    def ask(self, a: str, b: str) -> list[str]:
        self.asked.append((a, b))
        return self.answers.get((a, b), [])

    def verify(self, descriptions: dict[str, list[str]]) -> dict[str, list[str]]:
        return {name: [t for t in texts if t in self.PROPERTY] for name, texts in descriptions.items()}

    def cluster(self, descriptions: dict[str, list[str]]) -> np.ndarray:
        multi_hot = np.zeros((len(descriptions), len(self.PROPERTY)), dtype=np.uint8)
        for row, texts in enumerate(descriptions.values()):
            for text in texts:
                multi_hot[row, self.PROPERTY[text]] = 1
        return multi_hot


START = {"sky": ["grey", "flat"], "sidewalk": ["grey", "flat"], "car": ["wheels"]}


def test_the_loop_asks_each_ordered_pair_once_adds_verified_answers_and_stops_when_separated() -> None:
    loop = _Loop({("sky", "sidewalk"): ["blue", "clouds above", "made of wood"],
                  ("sidewalk", "sky"): ["curbs at its edge"]})
    result = repair_label_space(START, loop.ask, loop.verify, loop.cluster)
    assert loop.asked == [("sky", "sidewalk"), ("sidewalk", "sky")]
    assert len(result.rounds) == 1 and result.remaining == []
    assert result.rounds[0].added == {"sky": ["blue", "clouds above"], "sidewalk": ["curbs at its edge"]}
    assert result.descriptions["sky"] == ["grey", "flat", "blue", "clouds above"]  # "made of wood" verified away
    assert result.multi_hot.shape == (3, 6)


def test_the_loop_stops_when_a_round_adds_nothing_and_reports_the_pairs_left() -> None:
    loop = _Loop({("sky", "sidewalk"): ["made of wood"]})  # only garbage
    result = repair_label_space(START, loop.ask, loop.verify, loop.cluster, rounds=5)
    assert len(result.rounds) == 1 and loop.asked == [("sky", "sidewalk"), ("sidewalk", "sky")]
    assert result.remaining == [("sky", "sidewalk")]
    assert result.descriptions == START


def test_the_loop_runs_at_most_the_rounds_asked() -> None:
    loop = _Loop({("sky", "sidewalk"): ["blue"]})  # one new property: Hamming 1, still near
    result = repair_label_space(START, loop.ask, loop.verify, loop.cluster, rounds=0)
    assert result.rounds == [] and loop.asked == [] and len(result.remaining) == 1


def test_the_completion_repair_prompt_starts_a_list_about_the_target() -> None:
    assert repair_prompt("sky", "sidewalk") == "How to tell a sky from a sidewalk: a sky\n-"
    reply = " The sky is blue. Bright.\n- a sidewalk is grey\n- has clouds\n"
    assert parse_repair_reply(reply, "sky", "sidewalk", completion=True) == ["it is blue", "has clouds"]
