"""Verify descriptions before they are embedded: flag the lines that do not describe their class.

A small LLM copies lines of its prompt's worked examples into other classes (a car "may
carry a basket, lights, mudguards or a bell", from the bicycle), describes the wrong class,
names the class instead of describing it, or repeats itself; each such line becomes a
property the class does not have. The rules here
flag them, one reason a line, with the score behind it, so that nothing is dropped silently:

- ``copied``: equal or near-equal (embedding cosine) to a line of another category's worked
  example in the prompt;
- ``leaks_class_name``: so close to its own class name (the bare name, embedded) that it
  says the name rather than a property (Label-free CBM's filter);
- ``misattributed``: closer to another class's name, in a short sentence ("a photo of a
  building"), than to its own, by a margin, and close to it in absolute terms (a generic line
  such as "smooth surface" is nearer to some other class among 150 by chance, not about it);
  ``points_to`` names that class;
- ``too_long``: more characters than a limit (off by default);
- ``near_duplicate``: as close to an earlier kept line of the same class as a paraphrase is;
  the first one is kept (``duplicate_of``).

The rules are tried in that order and the first that applies is the reason. Texts are
lower-cased before they are embedded, as the embed stage does. Plain functions: the
embedding function is passed in (``tasks.label_space.embed.embed_texts`` with a model name and its
vector cache, in the pipeline).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

# Texts in, one row per text out (unit vectors, or vectors that are normalised here).
EmbedFn = Callable[[Sequence[str]], np.ndarray]

REASONS = ("copied", "leaks_class_name", "misattributed", "too_long", "near_duplicate")
COLUMNS = ["class", "index", "text", "kept", "reason", "score", "points_to", "duplicate_of"]


class VerifyParams(BaseModel):
    """Every rule's threshold; ``None`` turns a rule off.

    Defaults are calibrated on the paper's GPT-3.5 descriptions (all-MiniLM-L6-v2): together
    they flag 7.9 % of ADE20K's lines, 6.2 % of COCO-Stuff's, 3.9 % of Pascal Context's and
    3.2 % of Cityscapes' (the goal: at most 10 %; benchmarks/RESULTS.md, "label-space
    quality"). Without the absolute floor, a margin of 0.05 flags 68 % of ADE20K's lines.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    copied_cosine: float | None = Field(
        0.9, ge=0, le=1,
        description="a line at least this close to a worked-example line of another category is copied")
    class_name_cosine: float | None = Field(
        0.85, ge=0, le=1,
        description="a line at least this close to its own class name leaks the name (Label-free CBM: 0.85)")
    misattributed_margin: float | None = Field(
        0.15, ge=0, le=2,
        description="a line this much closer to another class's sentence than to its own is misattributed ...")
    misattributed_min_cosine: float = Field(
        0.5, ge=-1, le=1,
        description="... when it is at least this close to that sentence: a line about the other class, not a "
                    "generic one ('smooth surface') that many classes' sentences happen to be nearer to")
    class_sentence: str = Field(
        "a photo of a {}", description="how a class name is put into a sentence for the misattributed rule")
    max_chars: int | None = Field(
        None, ge=1, description="a longer line is too long (off by default; Label-free CBM used 30)")
    near_duplicate_cosine: float | None = Field(
        0.9, ge=0, le=1,
        description="a line at least this close to an earlier kept line of its class is a near-duplicate")


class VerifyError(ValueError):
    """Descriptions that cannot be verified, or a class left with no description."""


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _same_text(a: str, b: str) -> bool:
    """Equal up to case, spacing and punctuation."""
    def plain(text: str) -> str:
        return " ".join(re.findall(r"\w+", text.casefold()))

    return plain(a) == plain(b)


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
    closer (misattributed), or the length in characters (too_long); NaN for kept lines.
    """
    if not descriptions:
        raise VerifyError("no classes to verify")
    if "{}" not in params.class_sentence:
        raise VerifyError(f"class_sentence {params.class_sentence!r} has no '{{}}' for the class name")
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
        if reason is None and params.class_name_cosine is not None:
            leak = float(line_vectors[row] @ name_vectors[c])
            if leak >= params.class_name_cosine:
                reason, score = "leaks_class_name", leak
        if reason is None and params.misattributed_margin is not None and len(classes) > 1:
            similarities = sentence_similarity[row].copy()
            own = similarities[c]
            similarities[c] = -np.inf
            other = int(np.argmax(similarities))
            margin = float(similarities[other] - own)
            if margin >= params.misattributed_margin and similarities[other] >= params.misattributed_min_cosine:
                reason, score, points_to = "misattributed", margin, classes[other]
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


def kept_descriptions(table: pd.DataFrame, keep_flagged: bool = False) -> dict[str, list[str]]:
    """``{class: [text, ...]}`` of the kept lines (all lines with ``keep_flagged``), classes in order.

    A class whose every line was flagged is an error naming it and its reasons: an empty
    class would silently leave the label space without it.
    """
    out: dict[str, list[str]] = {}
    empty: dict[str, str] = {}
    for name, rows in table.groupby("class", sort=False):
        texts = list(rows["text"] if keep_flagged else rows.loc[rows["kept"], "text"])
        if not texts:
            counts = rows["reason"].value_counts()
            empty[str(name)] = ", ".join(f"{n} {reason}" for reason, n in counts.items())
        out[str(name)] = texts
    if empty:
        details = "; ".join(f"{name} ({why})" for name, why in empty.items())
        raise VerifyError(f"every description was flagged for {len(empty)} class(es): {details}; "
                          "loosen a threshold or keep the flagged lines")
    return out


def flagged_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many lines each rule flagged (every reason listed, zeros included)."""
    counts = table["reason"].value_counts()
    return {reason: int(counts.get(reason, 0)) for reason in REASONS}
