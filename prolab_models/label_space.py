"""The property-level label space as files, and the one function that loads it for a model.

It lives with the model, so the heads and metrics read it without importing the pipeline that
writes it (``tasks``). A label space directory (the cluster and repair stages' artifact) holds:

- ``descriptions.parquet``: one row per description: ``class_index, class_name,
  description_index, text`` (as written), ``embedded_text`` (lower-cased: what was embedded),
  ``property_id``;
- ``properties.parquet``: one row per property: ``property_id, name, size, n_classes,
  members`` (list of "class: description"), ``centre`` (list of float, D values);
- ``class_properties.parquet``: one row per class: ``class_index, class_name`` and one
  0/1 column per property named ``p000, p001, ...`` (the class x property multi-hot);
- ``label_space.json``: classes in label order, K, the embedder, its dimension (and, for a
  label space derived from another with classes held out, its ``key``, ``source`` and
  ``held_out``);
- ``quality.json`` / ``quality.md``: collisions, cluster sizes, properties per class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from prolab_models.errors import ProLabInputError

DESCRIPTIONS = "descriptions.parquet"
PROPERTIES = "properties.parquet"
CLASS_PROPERTIES = "class_properties.parquet"
META = "label_space.json"


class LabelSpaceError(ProLabInputError):
    """A label space directory is missing a file or is inconsistent."""


def property_column(property_id: int) -> str:
    return f"p{property_id:03d}"


@dataclass(frozen=True)
class LabelSpace:
    """What a model needs: the classes, the property centres and the class x property matrix."""

    path: Path
    classes: list[str]
    property_names: list[str]
    centres: np.ndarray  # (K, D) float32, as clustered (not normalised)
    multi_hot: np.ndarray  # (N, K) float32 of 0/1
    embedder: str
    key: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_properties(self) -> int:
        return self.centres.shape[0]

    @property
    def dim(self) -> int:
        return self.centres.shape[1]


def _read_table(path: Path) -> pd.DataFrame:
    """A Parquet file of the label space; a torn or foreign file is a LabelSpaceError naming it."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise LabelSpaceError(f"{path}: unreadable Parquet ({error})") from None


def load_label_space(path: str | Path) -> LabelSpace:
    """Load a label space directory written by the cluster stage."""
    root = Path(path).expanduser()
    for name in (META, PROPERTIES, CLASS_PROPERTIES):
        if not (root / name).is_file():
            raise LabelSpaceError(f"{root}: not a label space (no {name})")
    try:
        meta = json.loads((root / META).read_text())
    except ValueError as error:
        raise LabelSpaceError(f"{root / META}: not valid JSON ({error})") from None
    properties = _read_table(root / PROPERTIES).sort_values("property_id")
    matrix = _read_table(root / CLASS_PROPERTIES).sort_values("class_index")
    k = len(properties)
    columns = [property_column(i) for i in range(k)]
    missing = [c for c in columns if c not in matrix.columns]
    if missing or list(properties["property_id"]) != list(range(k)):
        raise LabelSpaceError(f"{root}: properties and {CLASS_PROPERTIES} disagree on K={k}")
    classes = list(meta["classes"])
    if list(matrix["class_name"]) != classes:
        raise LabelSpaceError(f"{root}: {CLASS_PROPERTIES} classes differ from {META}")
    manifest = root / "manifest.json"
    # A store artifact's key; else the key a derived label space records (held-out classes left
    # out of a given one); else the directory's name.
    key = json.loads(manifest.read_text())["key"] if manifest.is_file() else str(meta.get("key", root.name))
    return LabelSpace(
        path=root,
        classes=classes,
        property_names=list(properties["name"]),
        centres=np.stack(properties["centre"].to_numpy()).astype(np.float32),
        multi_hot=matrix[columns].to_numpy(dtype=np.float32),
        embedder=str(meta.get("embedder", "")),
        key=key,
    )
