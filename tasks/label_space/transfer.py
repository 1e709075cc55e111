"""Classes a model never trained on, from their descriptions alone (zero-shot transfer).

A trained ProLab model predicts K properties per pixel; a class is only a row of the class x
property multi-hot. A new class gets its row from words: each of its descriptions (embedded
as the embed stage does) goes to its nearest trained property centre, the property k-means
would have put it in (Euclidean distance, ``KMeans.predict``'s rule: a trained class's own
descriptions give back exactly its trained row), unless its cosine similarity to that centre
is below a floor (``tasks.params.SIMILARITY_FLOOR``): then no trained property expresses it,
and it is reported as unexpressed. The class's row holds the properties its expressed
descriptions reached; the centres never move, and a class none of whose descriptions is
expressed is refused by name (``require_expressed``).

The held-out protocol (zero-shot segmentation's seen/unseen split) builds on it:
``hold_out`` derives the training label space from a given one without the held-out classes
(their descriptions left out, the rest clustered again with the same K and seed), and
evaluation adds them back with ``class_rows``. Its two controls give an unseen class another
class's descriptions (``swapped_descriptions``) or random words (``random_word_descriptions``).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from prolab_models.label_space import CLASS_PROPERTIES, DESCRIPTIONS, META, PROPERTIES, LabelSpace, property_column
from tasks.errors import ProLabError
from tasks.files import sha256_json
from tasks.params import SIMILARITY_FLOOR

HOLD_OUT_VERSION = "1"
UNEXPRESSED = -1
ASSIGNMENT_COLUMNS = ["class_name", "description_index", "text", "property_id", "similarity"]

EmbedFn = Callable[[Sequence[str]], np.ndarray]


class TransferError(ProLabError, ValueError):
    """Classes or descriptions that cannot be scored with the trained properties."""


@dataclass(frozen=True)
class ClassRows:
    """The class x property rows that descriptions give, and where each description went."""

    classes: list[str]
    multi_hot: np.ndarray  # (C, K) float32 of 0/1
    # one row per description: class_name, description_index, text, property_id (-1:
    # unexpressed), similarity (cosine to the nearest centre)
    assignments: pd.DataFrame

    @classmethod
    def none(cls, k: int) -> ClassRows:
        """No class: what a prediction without new classes adds."""
        return cls([], np.zeros((0, k), np.float32), pd.DataFrame(columns=ASSIGNMENT_COLUMNS))

    def unexpressed_classes(self) -> list[str]:
        return [name for name, row in zip(self.classes, self.multi_hot) if not row.any()]

    def row(self, name: str) -> np.ndarray:
        return self.multi_hot[self.classes.index(name)]


def nearest_properties(vectors: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per vector: its nearest centre (Euclidean, as k-means assigns) and the cosine to it."""
    vectors = np.asarray(vectors, dtype=np.float64)
    centres = np.asarray(centres, dtype=np.float64)
    distances = (centres**2).sum(1)[None, :] - 2 * vectors @ centres.T  # |v - c|^2 less |v|^2
    nearest = distances.argmin(axis=1)
    chosen = centres[nearest]
    norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(chosen, axis=1)
    return nearest, (vectors * chosen).sum(1) / np.maximum(norms, 1e-12)


def rank_properties(vector: np.ndarray, centres: np.ndarray, top: int) -> list[tuple[int, float]]:
    """The ``top`` properties most similar to one embedded text (cosine to their centres, which
    is how the model's logits see a property: a direction), best first."""
    unit = np.asarray(centres, dtype=np.float64)
    unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    vector = np.asarray(vector, dtype=np.float64)
    similarity = unit @ (vector / max(float(np.linalg.norm(vector)), 1e-12))
    order = np.argsort(-similarity, kind="stable")[:top]
    return [(int(i), float(similarity[i])) for i in order]


def class_rows(descriptions: Mapping[str, Sequence[str]], centres: np.ndarray, embed: EmbedFn,
               floor: float = SIMILARITY_FLOOR) -> ClassRows:
    """Each class's row from its descriptions: the trained properties they are nearest to, where
    similar enough (``floor``). Nothing is refused here (see ``require_expressed``)."""
    classes = list(descriptions)
    lines = [(name, index, text) for name in classes for index, text in enumerate(descriptions[name])]
    if not lines:
        raise TransferError("no descriptions to score")
    nearest, similarity = nearest_properties(embed([text for _, _, text in lines]), centres)
    expressed = similarity >= floor
    multi_hot = np.zeros((len(classes), len(centres)), dtype=np.float32)
    for (name, _, _), property_id, ok in zip(lines, nearest, expressed):
        if ok:
            multi_hot[classes.index(name), property_id] = 1
    assignments = pd.DataFrame({
        "class_name": [name for name, _, _ in lines],
        "description_index": [index for _, index, _ in lines],
        "text": [text for _, _, text in lines],
        "property_id": np.where(expressed, nearest, UNEXPRESSED).astype(np.int64),
        "similarity": similarity.astype(np.float64),
    })
    return ClassRows(classes, multi_hot, assignments)


def scoring_rows(trained: LabelSpace, new: ClassRows, classes: Sequence[str]) -> ClassRows:
    """The rows of ``classes`` in that order: a class of ``new`` from its descriptions, any other
    as it was trained."""
    rows = [new.row(name) if name in new.classes else trained.multi_hot[trained.classes.index(name)]
            for name in classes]
    return ClassRows(list(classes), np.stack(rows).astype(np.float32), new.assignments)


def require_expressed(rows: ClassRows, floor: float) -> None:
    """Refuse, by name, a class none of whose descriptions reaches the floor: it would have no
    property, so the model could never predict it."""
    empty = rows.unexpressed_classes()
    if not empty:
        return
    reasons = []
    for name in empty:
        lines = rows.assignments[rows.assignments["class_name"] == name]
        best = lines.loc[lines["similarity"].idxmax()]
        reasons.append(f"class {name!r}: none of its {len(lines)} descriptions reaches the similarity floor "
                       f"{floor:.2f} to a trained property (best {best['similarity']:.2f}: {best['text']!r})")
    raise TransferError("; ".join(reasons) + "; describe it in other words, or lower --floor")


def check_held_out(held_out: Sequence[str], classes: Sequence[str], where: str) -> None:
    """Held-out classes must be classes of the dataset, each named once, and leave one to train on."""
    unknown = [name for name in held_out if name not in classes]
    if unknown:
        raise TransferError(f"--held-out {', '.join(map(repr, unknown))}: not a class of {where} "
                            f"({', '.join(classes)})")
    repeated = sorted({name for name in held_out if list(held_out).count(name) > 1})
    if repeated:
        raise TransferError(f"--held-out: {', '.join(map(repr, repeated))} named more than once")
    if set(classes) <= set(held_out):
        raise TransferError(f"--held-out: every class of {where} is held out; keep at least one to train on")


def label_space_descriptions(path: Path) -> dict[str, list[str]]:
    """The descriptions a label space was clustered from, ``{class: [text, ...]}`` in label order."""
    table_path = path / DESCRIPTIONS
    if not table_path.is_file():
        raise TransferError(f"{path}: no {DESCRIPTIONS}, so the classes' descriptions are unknown; use a label "
                            f"space that the pipeline built (prolab label-space)")
    classes = json.loads((path / META).read_text())["classes"]
    table = pd.read_parquet(table_path).sort_values(["class_index", "description_index"])
    grouped = {str(name): list(rows["text"]) for name, rows in table.groupby("class_name", sort=False)}
    return {name: grouped.get(name, []) for name in classes}


def held_out_key(source_key: str, held_out: Sequence[str]) -> str:
    """The derived label space's key (the checkpoint records it): its source's and what was held out."""
    return f"{source_key}-without-" + sha256_json({"held_out": sorted(held_out), "version": HOLD_OUT_VERSION})[:12]


def hold_out(source: LabelSpace, held_out: Sequence[str], out: Path, embed: EmbedFn) -> None:
    """Write into ``out`` the label space of ``source`` without the ``held_out`` classes: they are
    dropped from the class list and their descriptions from the clustering, which runs again
    with the source's K and seed over the other classes' descriptions, so no property is shaped
    by a held-out class. What shaped the kept descriptions before (verify and repair rounds
    that compared them with a held-out class) is not undone."""
    from tasks.label_space.cluster import cluster_embeddings, write_label_space
    from tasks.label_space.descriptors import descriptions_table

    check_held_out(held_out, source.classes, str(source.path))
    meta = json.loads((source.path / META).read_text())
    kept = {name: texts for name, texts in label_space_descriptions(source.path).items() if name not in held_out}
    table = descriptions_table(kept)
    table["embedded_text"] = [text.lower() for text in table["text"]]
    table["vector"] = list(np.asarray(embed(list(table["text"])), dtype=np.float32))
    seed = int(meta.get("seed", 0))
    write_label_space(out, cluster_embeddings(table, source.num_properties, seed), source.embedder, seed)
    derived = json.loads((out / META).read_text())
    derived.update(key=held_out_key(source.key, held_out), source=source.key, held_out=list(held_out))
    (out / META).write_text(json.dumps(derived, indent=2))


def swapped_descriptions(descriptions: Mapping[str, Sequence[str]], unseen: Sequence[str],
                         embed: EmbedFn) -> dict[str, str]:
    """The control's donor of each unseen class: the next unseen class (a cycle, so each gets
    another's descriptions) when there are two or more; with one, the seen class whose
    descriptions are least like its own (mean embeddings' cosine). A seen donor gives the
    unseen class that class's trained row: the two tie, and argmax gives the tie to the lower
    class index."""
    if len(unseen) > 1:
        return {name: unseen[(i + 1) % len(unseen)] for i, name in enumerate(unseen)}
    (name,) = unseen
    seen = [other for other in descriptions if other != name and descriptions[other]]

    def mean(texts: Sequence[str]) -> np.ndarray:
        vector = np.asarray(embed(list(texts)), dtype=np.float64).mean(axis=0)
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    own = mean(descriptions[name])
    return {name: min(seen, key=lambda other: float(mean(descriptions[other]) @ own))}


def random_word_descriptions(descriptions: Mapping[str, Sequence[str]], unseen: Sequence[str],
                             seed: int = 0) -> dict[str, list[str]]:
    """The control's random-word descriptors: per unseen class, as many lines as its own, each
    as many words long as its own line, the words drawn at random (``seed``) from the
    vocabulary of every class's descriptions."""
    vocabulary = sorted({word for texts in descriptions.values() for text in texts
                         for word in re.findall(r"[a-z]+", text.lower())})
    rng = np.random.default_rng(seed)
    return {name: [" ".join(rng.choice(vocabulary, max(1, len(text.split())))) for text in descriptions[name]]
            for name in unseen}


def write_scoring_label_space(out: Path, trained: LabelSpace, rows: ClassRows) -> Path:
    """A label space directory (``prolab_models.label_space``'s format) of the trained properties
    and the classes of ``rows``: what a model scores after ``use_classes``, and where each
    description went (``descriptions.parquet``: its property, -1 if unexpressed, and similarity)."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(trained.path / PROPERTIES, out / PROPERTIES)
    matrix = pd.DataFrame(rows.multi_hot.astype(np.uint8),
                          columns=[property_column(i) for i in range(trained.num_properties)])
    matrix.insert(0, "class_name", rows.classes)
    matrix.insert(0, "class_index", range(len(rows.classes)))
    matrix.to_parquet(out / CLASS_PROPERTIES, index=False)
    index = {name: i for i, name in enumerate(rows.classes)}
    rows.assignments.assign(class_index=rows.assignments["class_name"].map(index)).to_parquet(
        out / DESCRIPTIONS, index=False)
    key = f"{trained.key}-scoring-" + sha256_json({"classes": rows.classes, "rows": rows.multi_hot.tolist()})[:12]
    (out / META).write_text(json.dumps({"classes": rows.classes, "k": trained.num_properties, "embedder": trained.embedder,
                                        "dimension": trained.dim, "key": key, "source": trained.key}, indent=2))
    return out
