"""The repair stage: find classes the label space can hardly tell apart, and ask what separates them.

Two classes whose property sets are identical (a collision) or nearly so (multi-hot cosine
at least ``min_cosine``, or at most ``max_hamming`` properties apart) give the model almost
the same target; ProLab only reported them. Repair asks the LLM, per ordered pair (A, B), what
an A looks like that a B does not, verifies the answers like any description (a garbage
answer is dropped, not added), adds them to A and clusters again, for at most a few rounds,
stopping when no pair is left. Answers are cached per (model, prompt, ordered pair), so a
rerun asks nothing. The stage's artifact is the label space the model stages read, with its
quality report and what each round asked and added.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from prolab_models.label_space import CLASS_PROPERTIES, META, property_column
from tasks.files import MANIFEST
from tasks.label_space.llm.cache import REPAIR_ANSWERS, AnswerCache, repair_identity
from tasks.label_space.llm.prompts import REPAIR_PROMPT_VERSION, repair_question
from tasks.label_space.llm.replies import parse_repair_reply
from tasks.label_space.quality import near_colliding_pairs, quality_markdown, quality_report
from tasks.params import EndToEndParams
from tasks.reports import Report, read_json
from tasks.stage import StagePlan, declared_params, materialize
from tasks.store import ArtifactStore

if TYPE_CHECKING:
    import openai

    from tasks.label_space.llm.client import LLMSettings

log = logging.getLogger(__name__)

VERSION = "2"  # 2: the key holds the declared parameters (READS), by name
# What repair's key reads when it repairs: its thresholds, the LLM asked and how (describe's
# settings, less what changes no answer) and what verification, embedding and clustering add.
# Off (0 rounds) the clustered label space passes through, and it reads only its own section.
READS = ("label_space.repair", "label_space.describe", "label_space.verify", "label_space.embed.embedder",
         "label_space.cluster")
UNKEYED = ("label_space.describe.concurrency", "label_space.describe.max_retries", "label_space.describe.api_key_env",
           "label_space.describe.dataset", "label_space.describe.descriptors")
READS_OFF = ("label_space.repair",)
REPORT = "repair_report.json"
TABLE = "repair.parquet"


# ------------------------------------------------------------------------ the loop


@dataclass
class RepairRound:
    """One round: the pairs that triggered it, the lines asked for and those verification kept."""

    pairs: list[tuple[str, str]]
    answers: dict[tuple[str, str], list[str]]
    added: dict[str, list[str]]


@dataclass
class RepairResult:
    descriptions: dict[str, list[str]]
    multi_hot: np.ndarray
    rounds: list[RepairRound] = field(default_factory=list)
    remaining: list[tuple[str, str]] = field(default_factory=list)


AskFn = Callable[[str, str], list[str]]
VerifyFn = Callable[[dict[str, list[str]]], dict[str, list[str]]]
ClusterFn = Callable[[dict[str, list[str]]], np.ndarray]


def near_pairs(multi_hot: np.ndarray, classes: Sequence[str], min_cosine: float, max_hamming: int
               ) -> list[tuple[str, str]]:
    return [(classes[i], classes[j]) for i, j in near_colliding_pairs(multi_hot, min_cosine, max_hamming)]


def repair_label_space(
    descriptions: Mapping[str, Sequence[str]],
    ask: AskFn,
    verify: VerifyFn,
    cluster: ClusterFn,
    rounds: int = 2,
    min_cosine: float = 0.8,
    max_hamming: int = 1,
) -> RepairResult:
    """Ask, verify, add, re-cluster until no pair is near or ``rounds`` rounds are done.

    ``ask(a, b)`` returns the properties of ``a`` that tell it from ``b``; ``verify`` takes the
    descriptions with the answers added and returns what it keeps; ``cluster`` returns the
    multi-hot (classes in the order of ``descriptions``). Lines a class already has are not
    added twice; a round that adds nothing ends the loop (the next would get the same answers).
    """
    classes = list(descriptions)
    current = {name: list(texts) for name, texts in descriptions.items()}
    multi_hot = cluster(current)
    result = RepairResult(current, multi_hot)
    pairs = near_pairs(multi_hot, classes, min_cosine, max_hamming)
    for _ in range(rounds):
        if not pairs:
            break
        answers: dict[tuple[str, str], list[str]] = {}
        for a, b in pairs:
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
        pairs = near_pairs(multi_hot, classes, min_cosine, max_hamming)
    result.descriptions, result.multi_hot, result.remaining = current, multi_hot, pairs
    return result


# ------------------------------------------------------------------------ asking, cached


class CachedAsker:
    """``ask(a, b)`` for the loop: an answer per (model, prompt, ordered pair) from the answer
    cache, or from the LLM through the one client, whose server (for the embedded model) starts
    at the first question not cached."""

    def __init__(self, connect: Callable[[], contextlib.AbstractContextManager[LLMSettings]], model: str,
                 style: str, cache_dir: Path) -> None:
        self.connect, self.model, self.style, self.cache = connect, model, style, AnswerCache(cache_dir)
        self.requests = 0
        self._stack = contextlib.ExitStack()
        self._client: openai.OpenAI | None = None
        self._settings: LLMSettings | None = None

    def __enter__(self) -> CachedAsker:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def __call__(self, target: str, other: str) -> list[str]:
        identity = repair_identity(self.model, self.style, target, other)
        entry = self.cache.get(identity)
        if entry is None:
            reply = self._ask(target, other)
            self.requests += 1
            self.cache.put(identity, reply)
        else:
            reply = entry["raw_reply"]
        return parse_repair_reply(reply, target, other, completion=self.style == "aspects")

    def _ask(self, target: str, other: str) -> str:
        from tasks.label_space.llm.client import ask, open_client

        if self._client is None or self._settings is None:
            self._settings = self._stack.enter_context(self.connect())
            self._client = self._stack.enter_context(open_client(self._settings))
        question = repair_question(target, other, self.style, self._settings.max_tokens)
        return ask(self._client, self._settings, question).text


# ------------------------------------------------------------------------ the stage


def plan(params: EndToEndParams, inputs: Mapping[str, str]) -> StagePlan:
    """Off (0 rounds): the clustered label space passes through. On: the key holds the rounds,
    the pair thresholds, the LLM asked and how, and what verification and clustering add."""
    from tasks.label_space.describe import llm_model, model_is_named, prompt_style

    label_space = params.label_space
    settings: dict = {"rounds": label_space.repair_rounds}
    if label_space.repair_rounds:
        settings.update(declared_params(params, READS, UNKEYED), model=llm_model(label_space.describe),
                        prompt=prompt_style(label_space.describe), prompt_version=REPAIR_PROMPT_VERSION)
    else:
        settings.update(declared_params(params, READS_OFF))
    named = not label_space.repair_rounds or model_is_named(label_space.describe)
    return StagePlan("repair", VERSION, settings,
                     {"label_space": inputs["label_space"], "verification": inputs["verification"]},
                     sources=() if named else None)


def _class_descriptions(label_space: Path) -> dict[str, list[str]]:
    table = pd.read_parquet(label_space / "descriptions.parquet").sort_values(["class_index", "description_index"])
    classes = json.loads((label_space / META).read_text())["classes"]
    grouped = {name: list(rows["text"]) for name, rows in table.groupby("class_name", sort=False)}
    return {name: grouped.get(name, []) for name in classes}


def _dropped(verification: Path) -> dict[str, int]:
    from tasks.label_space.verify import TABLE as VERIFY_TABLE

    table = pd.read_parquet(verification / VERIFY_TABLE)
    return {str(reason): int(n) for reason, n in table.loc[~table["kept"], "reason"].value_counts().items()}


def run(plan: StagePlan, params: EndToEndParams, inputs: Mapping[str, Path], store: ArtifactStore) -> Path:
    """The repaired label space (the format of ``prolab_models.label_space``), its quality report
    with the descriptions verification dropped, and ``repair.parquet``: per round, each pair
    asked, the lines answered and whether they were added."""
    label_space = params.label_space

    def build(out: Path) -> None:
        dropped = _dropped(inputs["verification"])
        if not label_space.repair_rounds:
            for path in inputs["label_space"].iterdir():
                if path.is_file() and path.name != MANIFEST:
                    shutil.copy2(path, out / path.name)
            matrix = pd.read_parquet(out / CLASS_PROPERTIES).sort_values("class_index")
            k = json.loads((out / META).read_text())["k"]
            sizes = np.bincount(pd.read_parquet(out / "descriptions.parquet")["property_id"], minlength=k)
            _write_quality(out, list(matrix["class_name"]), matrix[[property_column(i) for i in range(k)]].to_numpy(),
                           sizes, params, dropped)
            (out / REPORT).write_text(json.dumps({"rounds": 0, "pairs": [], "remaining": []}, indent=2))
            return
        _repair(out, params, _class_descriptions(inputs["label_space"]), dropped, store)

    return materialize(store, plan, build)


def _write_quality(out: Path, classes: list[str], multi_hot: np.ndarray, sizes: np.ndarray,
                   params: EndToEndParams, dropped: dict[str, int]) -> dict:
    repair = params.label_space.repair
    quality = quality_report(classes, multi_hot, sizes, repair.min_cosine, repair.max_hamming, dropped)
    (out / "quality.json").write_text(json.dumps(quality, indent=2))
    (out / "quality.md").write_text(quality_markdown(quality))
    return quality


def _repair(out: Path, params: EndToEndParams, descriptions: dict[str, list[str]], dropped: dict[str, int],
            store: ArtifactStore) -> None:
    from functools import partial

    from tasks.label_space.cluster import cluster_embeddings, write_label_space
    from tasks.label_space.describe import llm_model, llm_settings, prompt_style
    from tasks.label_space.descriptors import descriptions_table
    from tasks.label_space.embed import embed_descriptions, embed_texts
    from tasks.label_space.verify import examples_for, verify_descriptions

    label_space = params.label_space
    embedder, cache = label_space.embed.embedder, store.embedding_cache
    clusterings = []

    def cluster(current: dict[str, list[str]]) -> np.ndarray:
        table, _ = embed_descriptions(descriptions_table(current), embedder, cache)
        clusterings.append(cluster_embeddings(table, label_space.cluster.k, label_space.cluster.seed))
        matrix = clusterings[-1].class_properties
        return matrix[[property_column(i) for i in range(label_space.cluster.k)]].to_numpy()

    def verify(proposed: dict[str, list[str]]) -> dict[str, list[str]]:
        """The lines the class had before repair, and the answers that pass every rule."""
        table = verify_descriptions(proposed, partial(embed_texts, embedder=embedder, cache_dir=cache),
                                    label_space.verify, examples_for(params))
        verdicts = {(row["class"], row["text"]): bool(row["kept"]) for _, row in table.iterrows()}
        return {name: [t for t in texts if t in descriptions[name] or verdicts[(name, t)]]
                for name, texts in proposed.items()}

    describe = label_space.describe
    style = prompt_style(describe)
    with CachedAsker(lambda: llm_settings(describe), llm_model(describe), style,
                     store.root / REPAIR_ANSWERS) as ask:
        result = repair_label_space(descriptions, ask, verify, cluster, label_space.repair_rounds,
                                    label_space.repair.min_cosine, label_space.repair.max_hamming)
    final = clusterings[-1]
    classes = list(final.class_properties["class_name"])
    quality = _write_quality(out, classes, result.multi_hot, np.asarray(final.quality["cluster_sizes"]["all"]),
                             params, dropped)
    write_label_space(out, dataclasses.replace(final, quality=quality), embedder, label_space.cluster.seed)
    records = [{"round": number, "target": target, "other": other, "line": line,
                "added": line in round_.added.get(target, [])}
               for number, round_ in enumerate(result.rounds, start=1)
               for (target, other), lines in round_.answers.items() for line in lines]
    pd.DataFrame.from_records(records, columns=["round", "target", "other", "line", "added"]).to_parquet(
        out / TABLE, index=False)
    report = {"rounds": label_space.repair_rounds, "rounds_run": len(result.rounds), "llm_requests": ask.requests,
              "pairs": [[number, a, b] for number, round_ in enumerate(result.rounds, start=1) for a, b in round_.pairs],
              "added": {name: sum(len(r.added.get(name, [])) for r in result.rounds) for name in classes},
              "remaining": [list(pair) for pair in result.remaining]}
    (out / REPORT).write_text(json.dumps(report, indent=2))


def run_name(params: EndToEndParams) -> str:
    rounds = params.label_space.repair_rounds
    return f"repair, {rounds} rounds at most" if rounds else "repair (off)"


def reports(directory: Path) -> list[Report]:
    """The label space as the cluster stage shows it, and what repair asked and added."""
    from tasks.label_space.cluster import reports as label_space_reports

    found = label_space_reports(directory)
    report = read_json(directory / REPORT)
    if report is not None and report["rounds"]:
        table = pd.read_parquet(directory / TABLE)
        rows = [{"round": int(r["round"]), "class": r["target"], "told from": r["other"], "line": r["line"],
                 "added": bool(r["added"])} for _, r in table.iterrows()]
        pairs = ", ".join(f"{a}/{b} (round {n})" for n, a, b in report["pairs"]) or "none"
        left = ", ".join("/".join(pair) for pair in report["remaining"]) or "none"
        found.append(Report("repair", "table", rows or [{"round": 0, "class": "", "told from": "", "line": "",
                                                          "added": False}],
                            f"**repaired pairs:** {pairs}; **still near:** {left}; "
                            f"LLM requests: {report['llm_requests']}"))
    return found


def status_note(directory: Path) -> str:
    """What ``prolab status`` adds for a repair that is up to date: the pairs it repaired."""
    report = read_json(directory / REPORT) or {}
    if not report.get("rounds"):
        return "repair off"
    pairs = ", ".join(f"{a}/{b} (round {n})" for n, a, b in report["pairs"]) or "no near pair"
    left = ", ".join("/".join(pair) for pair in report["remaining"])
    return f"repaired {pairs}" + (f"; still near: {left}" if left else "")
