"""Verify descriptions before they are embedded: flag the lines that do not describe their class.

A small LLM copies lines of its prompt's worked examples into other classes (a car "may
carry a basket, lights, mudguards or a bell", from the bicycle), describes the wrong class,
names the class instead of describing it, or repeats itself; each such line becomes a
property the class does not have. The rules here
flag them, one reason a line, with the score behind it, so that nothing is dropped silently:

- ``copied``: equal or near-equal (embedding cosine) to a line of another category's worked
  example in the prompt;
- ``question``: the line holds a question mark. A property is a statement; a small model that
  echoes its question back ("What does a sky look like that a person does not? Answer with 3
  to") writes one, and the echo is too loosely worded to be near-equal to the prompt;
- ``other_script``: a smaller share of its letters are Latin than a floor (0.9: a small model
  drifting into Japanese mid-answer, "に通りのmodel"); the prompts ask in English and the
  embedders read English;
- ``leaks_class_name``: so close to its own class name (the bare name, embedded) that it
  says the name rather than a property (Label-free CBM's filter);
- ``misattributed``: closer to another class's name, in a short sentence ("a photo of a
  building"), than to its own, by a margin, and close to it in absolute terms (a generic line
  such as "smooth surface" is nearer to some other class among 150 by chance, not about it);
  ``points_to`` names that class;
- ``other_class``: closer to another class's descriptions (the mean of their embeddings; the
  line itself left out of its own class's mean) than to its own class's, by a margin, and closer
  to that class's sentence than to its own class's, by a second margin. It catches a line about
  another class of the same dataset that is not close to that class's name ("has handlebars and
  pedals" said of a car: its parts, not "a bicycle"); the sentence margin keeps out generic lines
  ("texture can range from smooth to rough") that one class's descriptions happen to be nearer
  to; ``points_to`` names that class;
- ``too_long``: more characters than a limit (off by default);
- ``near_duplicate``: as close to an earlier kept line of the same class as a paraphrase is;
  the first one is kept (``duplicate_of``).

The rules are tried in that order and the first that applies is the reason. Texts are
lower-cased before they are embedded, as the embed stage does. Plain functions: the
embedding function is passed in (``tasks.label_space.embed.embed_texts`` with a model name and its
vector cache, in the pipeline).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.errors import ProLabError
from tasks.label_space.descriptors import load_descriptions, write_descriptions
from tasks.params import EndToEndParams, VerifyParams
from tasks.reports import Report, markdown_table, read_json
from tasks.stage import StagePlan, declared_params, materialize
from tasks.store import ArtifactStore

# Texts in, one row per text out (unit vectors, or vectors that are normalised here).
EmbedFn = Callable[[Sequence[str]], np.ndarray]

REASONS = ("copied", "question", "other_script", "leaks_class_name", "misattributed", "other_class", "too_long",
           "near_duplicate")
COLUMNS = ["class", "index", "text", "kept", "reason", "score", "points_to", "duplicate_of"]


class VerifyError(ProLabError, ValueError):
    """Descriptions that cannot be verified."""


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _nearest_other(similarities: np.ndarray, own: int) -> tuple[int, float]:
    """The class other than ``own`` that a line is most similar to, and by how much more than to
    its own (negative: its own class is nearer)."""
    others = similarities.copy()
    others[own] = -np.inf
    other = int(np.argmax(others))
    return other, float(similarities[other] - similarities[own])


def _same_text(a: str, b: str) -> bool:
    """Equal up to case, spacing and punctuation."""
    def plain(text: str) -> str:
        return " ".join(re.findall(r"\w+", text.casefold()))

    return plain(a) == plain(b)


def _latin_share(text: str) -> float:
    """The share of the text's letters that are Latin (accented ones included); 0 with no letter."""
    letters = [character for character in text if character.isalpha()]
    if not letters:
        return 0.0
    return sum(unicodedata.name(letter, "").startswith("LATIN") for letter in letters) / len(letters)


def verify_descriptions(
    descriptions: Mapping[str, Sequence[str]],
    embed: EmbedFn,
    params: VerifyParams = VerifyParams(),
    examples: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """One row per description: ``class, index, text, kept, reason, score, points_to, duplicate_of``.

    ``examples`` are the prompt's worked examples ``{category: [line, ...]}`` (none for
    imported descriptions); a line copied from the example of its own category is not
    flagged, since it describes that category. ``score`` is the figure the reason rests on:
    a cosine (copied, leaks_class_name, near_duplicate), the margin by which another class is
    closer (misattributed: its sentence; other_class: its descriptions), the length in characters
    (too_long), the Latin share of the letters (other_script); NaN for kept lines and questions.
    """
    if not descriptions:
        raise VerifyError("no classes to verify")
    classes = list(descriptions)
    examples = dict(examples or {})
    example_lines = [(category, line) for category, lines in examples.items() for line in lines]
    sentences = [params.class_sentence.format(name) for name in classes]

    # One call embeds every text the rules compare, lower-cased as the embed stage does.
    lines = [(c, i, text) for c, name in enumerate(classes) for i, text in enumerate(descriptions[name])]
    wanted = [t for _, _, t in lines] + classes + sentences + [line for _, line in example_lines]
    unique = list(dict.fromkeys(text.lower() for text in wanted))
    vectors = _normalise(embed(unique))
    if vectors.shape[0] != len(unique):
        raise VerifyError(f"the embedding function returned {vectors.shape[0]} vectors for {len(unique)} texts")
    row_of = {text: row for row, text in enumerate(unique)}

    def vec(texts: Sequence[str]) -> np.ndarray:
        return vectors[[row_of[t.lower()] for t in texts]].reshape(len(texts), vectors.shape[1])

    line_vectors = vec([t for _, _, t in lines])
    name_vectors = vec(classes)
    sentence_similarity = line_vectors @ vec(sentences).T  # lines x classes
    example_similarity = line_vectors @ vec([line for _, line in example_lines]).T
    # Each class's descriptions as the sum of their vectors; a line is taken out of its own
    # class's sum before it is compared with it, or it would vote for itself.
    owner = np.array([c for c, _, _ in lines], dtype=int)
    class_sums = np.stack([line_vectors[owner == c].sum(axis=0) for c in range(len(classes))])
    class_counts = np.bincount(owner, minlength=len(classes))

    records = []
    kept_vectors: dict[int, list[tuple[int, np.ndarray]]] = {}
    for row, (c, index, text) in enumerate(lines):
        name = classes[c]
        reason: str | None = None
        score = float("nan")
        points_to: str | None = None
        duplicate_of: int | None = None

        if params.copied_cosine is not None and example_lines:
            others = [j for j, (category, _) in enumerate(example_lines) if category.casefold() != name.casefold()]
            if others:
                similarities = example_similarity[row, others]
                best = others[int(np.argmax(similarities))]
                equal = _same_text(text, example_lines[best][1])
                best_score = 1.0 if equal else float(example_similarity[row, best])
                if best_score >= params.copied_cosine:
                    reason, score, points_to = "copied", best_score, example_lines[best][0]
        if reason is None and params.flag_questions and "?" in text:
            reason = "question"
        if reason is None and params.min_latin_share is not None:
            share = _latin_share(text)
            if share < params.min_latin_share:
                reason, score = "other_script", share
        if reason is None and params.class_name_cosine is not None:
            leak = float(line_vectors[row] @ name_vectors[c])
            if leak >= params.class_name_cosine:
                reason, score = "leaks_class_name", leak
        if reason is None and params.misattributed_margin is not None and len(classes) > 1:
            other, margin = _nearest_other(sentence_similarity[row], c)
            near = sentence_similarity[row, other] >= params.misattributed_min_cosine
            if margin >= params.misattributed_margin and near:
                reason, score, points_to = "misattributed", margin, classes[other]
        # Only with another line of its own class to compare with: a lone line has no class mean.
        if reason is None and params.other_class_margin is not None and len(classes) > 1 and class_counts[c] > 1:
            centroids = class_sums.copy()
            centroids[c] -= line_vectors[row]
            other, margin = _nearest_other(_normalise(centroids) @ line_vectors[row], c)
            sentence_margin = float(sentence_similarity[row, other] - sentence_similarity[row, c])
            if margin >= params.other_class_margin and sentence_margin >= params.other_class_sentence_margin:
                reason, score, points_to = "other_class", margin, classes[other]
        if reason is None and params.max_chars is not None and len(text) > params.max_chars:
            reason, score = "too_long", float(len(text))
        if reason is None and params.near_duplicate_cosine is not None:
            earlier = kept_vectors.get(c, [])
            if earlier:
                similarities = np.array([line_vectors[row] @ v for _, v in earlier])
                best = int(np.argmax(similarities))
                if similarities[best] >= params.near_duplicate_cosine:
                    reason, score, duplicate_of = "near_duplicate", float(similarities[best]), earlier[best][0]
        if reason is None:
            kept_vectors.setdefault(c, []).append((index, line_vectors[row]))
        records.append({"class": name, "index": index, "text": text, "kept": reason is None, "reason": reason,
                        "score": score, "points_to": points_to, "duplicate_of": duplicate_of})
    table = pd.DataFrame.from_records(records, columns=COLUMNS)
    table["duplicate_of"] = table["duplicate_of"].astype("Int64")
    for column in ("reason", "points_to"):  # None, not NaN, where no rule applies
        table[column] = table[column].astype(object).where(table[column].notna(), None)
    return table


def kept_descriptions(table: pd.DataFrame, keep_flagged: bool = False) -> tuple[dict[str, list[str]], list[str]]:
    """``{class: [text, ...]}`` of the kept lines (all lines with ``keep_flagged``), classes in
    order; and the classes whose every line was flagged, which keep them all: a class without
    descriptions would have no property, and the model could never predict it."""
    out: dict[str, list[str]] = {}
    kept_whole: list[str] = []
    for name, rows in table.groupby("class", sort=False):
        texts = list(rows["text"] if keep_flagged else rows.loc[rows["kept"], "text"])
        if not texts:
            texts = list(rows["text"])
            kept_whole.append(str(name))
        out[str(name)] = texts
    return out, kept_whole


def flagged_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many lines each rule flagged (every reason listed, zeros included)."""
    counts = table["reason"].value_counts()
    return {reason: int(counts.get(reason, 0)) for reason in REASONS}


# --------------------------------------------------------------------------------- the stage

VERSION = "3"  # 2: the question and other_script rules; 3: the other_class rule, the declared key (READS)
# What verify's key reads when it is on (off, the descriptions pass through and it reads nothing).
READS = ("label_space.verify", "label_space.embed.embedder")
TABLE = "verification.parquet"
REPORT = "verify_report.json"


def examples_for(params: EndToEndParams) -> dict[str, tuple[str, ...]]:
    """The worked examples the descriptions may have copied: the few-shot prompt's, when an LLM
    was asked with it; none for the aspects prompt (it shows none) or a descriptors file."""
    from tasks.label_space.describe import prompt_style
    from tasks.label_space.llm.prompts import EXAMPLES

    describe = params.label_space.describe
    return EXAMPLES if describe.source == "llm" and prompt_style(describe) == "few-shot" else {}


def plan(params: EndToEndParams, inputs: Mapping[str, str]) -> StagePlan:
    """Off: the descriptions pass through. On: the key holds every threshold, the embedder
    and the worked examples compared against."""
    settings: dict = {"enabled": params.label_space.verifies}
    if params.label_space.verifies:
        settings.update(declared_params(params, READS), examples=examples_for(params))
    return StagePlan("verify", VERSION, settings, {"descriptions": inputs["descriptions"]}, sources=())


def run(plan: StagePlan, params: EndToEndParams, inputs: Mapping[str, Path], store: ArtifactStore) -> Path:
    """``descriptions.json``/``.parquet`` of the kept lines, and ``verification.parquet`` with
    every line, kept or flagged, its reason and the score behind it."""
    from functools import partial

    from tasks.label_space.embed import embed_texts

    label_space = params.label_space

    def build(out: Path) -> None:
        descriptions = load_descriptions(inputs["descriptions"])
        if label_space.verifies:
            embed = partial(embed_texts, embedder=label_space.embed.embedder,
                            cache_dir=store.embedding_cache)
            table = verify_descriptions(descriptions, embed, label_space.verify, examples_for(params))
            kept, kept_whole = kept_descriptions(table, label_space.verify.keep_flagged)
        else:
            table = pd.DataFrame.from_records(
                [{"class": name, "index": i, "text": text, "kept": True, "reason": None, "score": float("nan"),
                  "points_to": None, "duplicate_of": None}
                 for name, texts in descriptions.items() for i, text in enumerate(texts)], columns=COLUMNS)
            table["duplicate_of"] = table["duplicate_of"].astype("Int64")
            kept, kept_whole = descriptions, []
        write_descriptions(out, kept)
        table.to_parquet(out / TABLE, index=False)
        report = {"enabled": label_space.verifies, "lines": len(table), "kept": sum(map(len, kept.values())),
                  "flagged": flagged_counts(table), "kept_whole": kept_whole}
        (out / REPORT).write_text(json.dumps(report, indent=2))

    return materialize(store, plan, build)


def run_name(params: EndToEndParams) -> str:
    return "verify" if params.label_space.verifies else "verify (off)"


def reports(directory: Path) -> list[Report]:
    """How many lines each rule flagged, and every flagged line with its reason."""
    report = read_json(directory / REPORT)
    if report is None:
        return []
    if not report["enabled"]:
        return [Report("verify", "markdown", f"# Verification\n\nOff: all {report['lines']} lines kept.",
                       "verify stage: off")]
    table = pd.read_parquet(directory / TABLE)
    flagged = table[table["reason"].notna()]
    rows = [{"class": row["class"], "line": row["text"], "reason": row["reason"], "score": round(float(row["score"]), 3),
             "points to": row["points_to"] or "", "kept": bool(row["kept"])} for _, row in flagged.iterrows()]
    summary = (f"**{report['lines'] - report['kept']} of {report['lines']} lines dropped**\n\n"
               + markdown_table({reason: count for reason, count in report["flagged"].items()}))
    if report["kept_whole"]:
        summary += f"\n\nEvery line of {', '.join(report['kept_whole'])} was flagged: kept, so the class is not lost."
    return [Report("verify", "table", rows or [{"class": "", "line": "nothing flagged", "reason": "", "score": 0,
                                                  "points to": "", "kept": True}], summary)]
