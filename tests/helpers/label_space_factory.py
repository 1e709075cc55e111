"""Small label spaces on disk, in the cluster stage's format, for tests that need a real one."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from prolab_models.label_space import CLASS_PROPERTIES, META, PROPERTIES, property_column


def make_label_space(
    directory: Path,
    classes: Sequence[str],
    k: int = 8,
    dim: int = 16,
    seed: int = 0,
    multi_hot: np.ndarray | None = None,
    key: str | None = None,
) -> Path:
    """Write a label space of ``len(classes)`` classes and ``k`` random properties (``dim``-d
    centres) under ``directory`` and return it. ``multi_hot`` (N, K) defaults to distinct
    random rows with 2..K-1 properties each; ``key`` goes into a manifest.json if given."""
    rng = np.random.default_rng(seed)
    n = len(classes)
    if multi_hot is None:
        rows: set[tuple[int, ...]] = set()
        while len(rows) < n:
            row = (rng.random(k) < 0.4).astype(int)
            if 2 <= row.sum() < k:
                rows.add(tuple(row))
        multi_hot = np.array(sorted(rows), dtype=np.float32)
        rng.shuffle(multi_hot)
    multi_hot = np.asarray(multi_hot, dtype=np.float32)
    k = multi_hot.shape[1]
    directory.mkdir(parents=True, exist_ok=True)
    centres = rng.normal(size=(k, dim)).astype(np.float32)
    pd.DataFrame({
        "property_id": range(k),
        "name": [f"property {i}" for i in range(k)],
        "size": [int(multi_hot[:, i].sum()) for i in range(k)],
        "n_classes": [int(multi_hot[:, i].sum()) for i in range(k)],
        "members": [[f"{c}: property {i}" for c, on in zip(classes, multi_hot[:, i]) if on] for i in range(k)],
        "centre": [list(map(float, c)) for c in centres],
    }).to_parquet(directory / PROPERTIES)
    table = pd.DataFrame({"class_index": range(n), "class_name": list(classes)})
    for i in range(k):
        table[property_column(i)] = multi_hot[:, i].astype(np.int8)
    table.to_parquet(directory / CLASS_PROPERTIES)
    (directory / META).write_text(json.dumps({"classes": list(classes), "k": k, "embedder": "test", "dim": dim}))
    if key is not None:
        (directory / "manifest.json").write_text(json.dumps({"key": key}))
    return directory
