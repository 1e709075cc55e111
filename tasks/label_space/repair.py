"""Repair a label space: find classes it can hardly tell apart, and ask what separates them.

Two classes whose property sets are identical (a collision) or nearly so give the model
almost the same target; ProLab only reported them. Repair asks the LLM, per ordered pair
(A, B), what a A looks like that a B does not, verifies the answers like any description,
adds them to A and clusters again, for at most a few rounds.

The pieces are plain functions: the pairs to repair and the pairwise figures the quality
report shows (from the class x property multi-hot), the repair prompt and its parser, and
the loop itself, which takes the LLM, verification and clustering as callables.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from tasks.label_space.llm import SYSTEM_MESSAGE, parse_aspect_reply, parse_properties

# Bump when the repair prompt or its parser changes what an answer is (part of its cache key).
REPAIR_PROMPT_VERSION = "prolab-repair-v1"
MAX_REPAIR_PROPERTIES = 6


class RepairParams(BaseModel):
    """When a pair of classes is repaired, and for how many rounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_cosine: float = Field(0.8, ge=0, le=1,
                              description="repair a pair whose multi-hot rows have at least this cosine")
    max_hamming: int = Field(1, ge=0, description="... or differ in at most this many properties")
    rounds: int = Field(2, ge=0, description="ask, verify and re-cluster at most this many times")


# ------------------------------------------------------------------------ pairwise figures


def pair_table(multi_hot: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """Every unordered pair of classes: ``a, b, cosine, hamming, a_subset_of_b, b_subset_of_a``.

    The cosine of two multi-hot rows is what the model's class logits compare; two empty rows
    count as identical (cosine 1). A subset pair (every property of ``a`` is one of ``b``'s)
    leaves ``a`` with nothing of its own to be recognised by.
    """
    rows = np.asarray(multi_hot, dtype=bool)
    if rows.ndim != 2 or rows.shape[0] != len(classes):
        raise ValueError(f"multi-hot of shape {rows.shape} does not match {len(classes)} classes")
    counts = rows.sum(axis=1).astype(np.float64)
    shared = rows.astype(np.float64) @ rows.T.astype(np.float64)
    records = []
    for i in range(len(classes)):
        for j in range(i + 1, len(classes)):
            denominator = np.sqrt(counts[i] * counts[j])
            cosine = shared[i, j] / denominator if denominator else float(counts[i] == counts[j])
            records.append({
                "a": classes[i], "b": classes[j], "cosine": float(cosine),
                "hamming": int((rows[i] != rows[j]).sum()),
                "a_subset_of_b": bool(counts[i] and shared[i, j] == counts[i]),
                "b_subset_of_a": bool(counts[j] and shared[i, j] == counts[j]),
            })
    return pd.DataFrame.from_records(records, columns=["a", "b", "cosine", "hamming", "a_subset_of_b",
                                                       "b_subset_of_a"])


def nearest_classes(multi_hot: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """For every class, the class it is closest to: highest cosine, then lowest Hamming distance."""
    pairs = pair_table(multi_hot, classes)
    both = pd.concat([pairs[["a", "b", "cosine", "hamming"]],
                      pairs.rename(columns={"a": "b", "b": "a"})[["a", "b", "cosine", "hamming"]]])
    both = both.sort_values(["cosine", "hamming"], ascending=[False, True], kind="stable")
    nearest = both.groupby("a", sort=False).head(1).set_index("a").reindex(list(classes))
    return nearest.reset_index().rename(columns={"a": "class", "b": "nearest"})


def pairs_to_repair(multi_hot: np.ndarray, classes: Sequence[str], params: RepairParams = RepairParams()
                    ) -> pd.DataFrame:
    """The pairs whose property sets are identical or nearly so (cosine or Hamming distance)."""
    pairs = pair_table(multi_hot, classes)
    near = (pairs["cosine"] >= params.min_cosine) | (pairs["hamming"] <= params.max_hamming)
    return pairs[near].reset_index(drop=True)


# ------------------------------------------------------------------------ prompt and parser


def repair_prompt(target: str, other: str) -> str:
    """For base models (the ``aspects`` prompt style, e.g. the embedded Gemma): the start of a
    list, completed as plain text, of what tells a ``target`` from an ``other``."""
    return f"How to tell a {target} from a {other}: a {target}\n-"


def build_repair_messages(target: str, other: str) -> list[dict[str, str]]:
    """For chat models: the messages asking what a ``target`` looks like that an ``other`` does not."""
    question = (
        f"What does a {target} look like that a {other} does not? "
        f'Answer with 3 to {MAX_REPAIR_PROPERTIES} short lines, each starting with "- ", '
        f"each a visual property of a {target} (colour, shape, material, parts, where it is found, size). "
        f"Do not describe the {other}."
    )
    return [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": question}]


def parse_repair_reply(reply: str, target: str, other: str, completion: bool = False) -> list[str]:
    """The properties of ``target`` in a repair answer.

    The reply's list items (as ``tasks.label_space.llm.parse_properties`` reads a chat reply, or
    ``parse_aspect_reply`` the completion of ``repair_prompt``), less the lines that name
    ``other``: "unlike a sidewalk, ..." describes the contrast, and its embedding would pull
    ``target`` towards the very class it must be told from.
    """
    names_other = re.compile(rf"\b{re.escape(other.lower())}s?\b")
    lines = parse_aspect_reply(reply, target, MAX_REPAIR_PROPERTIES * 2) if completion else parse_properties(reply)
    kept = [line for line in lines if not names_other.search(line.lower())]
    return kept[:MAX_REPAIR_PROPERTIES]


# ------------------------------------------------------------------------ the loop


@dataclass
class RepairRound:
    """One round: the pairs that triggered it, the lines asked for and those verification kept."""

    pairs: pd.DataFrame
    answers: dict[tuple[str, str], list[str]]
    added: dict[str, list[str]]


@dataclass
class RepairResult:
    descriptions: dict[str, list[str]]
    multi_hot: np.ndarray
    rounds: list[RepairRound] = field(default_factory=list)
    remaining: pd.DataFrame = field(default_factory=pd.DataFrame)


AskFn = Callable[[str, str], list[str]]
VerifyFn = Callable[[dict[str, list[str]]], dict[str, list[str]]]
ClusterFn = Callable[[dict[str, list[str]]], np.ndarray]


def repair_label_space(
    descriptions: Mapping[str, Sequence[str]],
    ask: AskFn,
    verify: VerifyFn,
    cluster: ClusterFn,
    params: RepairParams = RepairParams(),
) -> RepairResult:
    """Ask, verify, add, re-cluster until no pair is near or ``params.rounds`` rounds are done.

    ``ask(a, b)`` returns the properties of ``a`` that tell it from ``b`` (cached by the
    caller per ordered pair and model); ``verify`` takes the descriptions with the answers
    added and returns what it keeps; ``cluster`` returns the multi-hot (classes in the
    order of ``descriptions``). Lines a class already has are not added twice; a round that
    adds nothing ends the loop (the next would get the same answers).
    """
    classes = list(descriptions)
    current = {name: list(texts) for name, texts in descriptions.items()}
    multi_hot = cluster(current)
    result = RepairResult(current, multi_hot)
    pairs = pairs_to_repair(multi_hot, classes, params)
    for _ in range(params.rounds):
        if pairs.empty:
            break
        answers: dict[tuple[str, str], list[str]] = {}
        for a, b in zip(pairs["a"], pairs["b"]):
            answers[(a, b)] = ask(a, b)
            answers[(b, a)] = ask(b, a)
        proposed = {name: list(texts) for name, texts in current.items()}
        for (target, _), lines in answers.items():
            known = {text.casefold() for text in proposed[target]}
            for line in lines:
                if line.casefold() not in known:
                    proposed[target].append(line)
                    known.add(line.casefold())
        verified = verify(proposed)
        added = {name: [t for t in verified[name] if t not in current[name]] for name in classes}
        added = {name: texts for name, texts in added.items() if texts}
        result.rounds.append(RepairRound(pairs, answers, added))
        if not added:
            break  # another round would ask the same questions and get the same (cached) answers
        current = {name: list(verified[name]) for name in classes}
        multi_hot = cluster(current)
        pairs = pairs_to_repair(multi_hot, classes, params)
    result.descriptions, result.multi_hot, result.remaining = current, multi_hot, pairs
    return result
