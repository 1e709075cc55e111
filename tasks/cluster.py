"""The cluster stage: k-means over description embeddings gives the property-level label space.

Procedure as in the paper: ``KMeans(n_clusters=K, random_state=seed, n_init="auto")``;
class c has property k iff one of c's descriptions fell in cluster k. The files are the
format documented in ``tasks.label_space``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans

from tasks.params import ClusterParams
from tasks.stage import StagePlan, materialize
from tasks.store import ArtifactStore
from tasks.label_space import CLASS_PROPERTIES, DESCRIPTIONS, META, PROPERTIES, property_column

CLUSTER_VERSION = "1"


class ClusterError(ValueError):
    """K or the embeddings do not allow a clustering."""


@dataclass(frozen=True)
class Clustering:
    descriptions: pd.DataFrame  # the embeddings table plus property_id
    properties: pd.DataFrame
    class_properties: pd.DataFrame
    quality: dict


def cluster_embeddings(table: pd.DataFrame, k: int, seed: int) -> Clustering:
    """Cluster the ``vector`` column of an embeddings table into ``k`` properties."""
    n_texts = len(table)
    if not 1 <= k <= n_texts:
        raise ClusterError(f"k={k}: must be between 1 and the number of descriptions ({n_texts})")
    vectors = np.stack(table["vector"].to_numpy()).astype(np.float32)
    if not np.isfinite(vectors).all():
        raise ClusterError("embeddings contain NaN or infinite values")
    kmeans = KMeans(n_clusters=k, random_state=seed, n_init="auto").fit(vectors)
    labels = kmeans.labels_.astype(np.int64)
    centres = kmeans.cluster_centers_.astype(np.float32)

    described = table.drop(columns=["vector"]).assign(property_id=labels)
    classes = list(dict.fromkeys(described.sort_values("class_index")["class_name"]))
    multi_hot = np.zeros((len(classes), k), dtype=np.uint8)
    multi_hot[described["class_index"].to_numpy(), labels] = 1

    properties = []
    for pid in range(k):
        members = described[labels == pid]
        distances = np.linalg.norm(vectors[labels == pid] - centres[pid], axis=1)
        properties.append({
            "property_id": pid,
            "name": members["text"].iloc[int(np.argmin(distances))] if len(members) else f"property {pid}",
            "size": len(members),
            "n_classes": int(multi_hot[:, pid].sum()),
            "members": [f"{c}: {t}" for c, t in zip(members["class_name"], members["text"])],
            "centre": centres[pid].tolist(),
        })
    class_properties = pd.DataFrame(multi_hot, columns=[property_column(i) for i in range(k)])
    class_properties.insert(0, "class_name", classes)
    class_properties.insert(0, "class_index", range(len(classes)))
    return Clustering(described, pd.DataFrame(properties), class_properties,
                      quality_report(classes, multi_hot, np.bincount(labels, minlength=k)))


def quality_report(classes: list[str], multi_hot: np.ndarray, sizes: np.ndarray) -> dict:
    """Collisions (classes with identical property sets), cluster sizes, properties per class."""
    groups: dict[bytes, list[str]] = {}
    for name, row in zip(classes, multi_hot):
        groups.setdefault(row.tobytes(), []).append(name)
    per_class = multi_hot.sum(axis=1)
    single_class = int((multi_hot.sum(axis=0) == 1).sum())
    return {
        "classes": len(classes),
        "properties": int(multi_hot.shape[1]),
        "collisions": [names for names in groups.values() if len(names) > 1],
        "cluster_sizes": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max()),
                          "all": sizes.tolist()},
        "properties_per_class": {name: int(n) for name, n in zip(classes, per_class)},
        "properties_used_by_one_class": single_class,
    }


def quality_markdown(quality: dict) -> str:
    sizes = quality["cluster_sizes"]
    lines = [
        "# Label-space quality",
        "",
        f"- classes: {quality['classes']}, properties: {quality['properties']}",
        f"- cluster sizes: min {sizes['min']}, median {sizes['median']:g}, max {sizes['max']}",
        f"- properties used by one class only: {quality['properties_used_by_one_class']}",
        f"- collisions (classes with identical property sets): {len(quality['collisions'])}",
    ]
    lines += [f"  - {', '.join(group)}" for group in quality["collisions"]]
    lines += ["", "| class | properties |", "|---|---|"]
    lines += [f"| {name} | {n} |" for name, n in quality["properties_per_class"].items()]
    return "\n".join(lines) + "\n"


def write_label_space(directory: Path, clustering: Clustering, embedder: str, seed: int) -> None:
    classes = list(clustering.class_properties["class_name"])
    clustering.descriptions.to_parquet(directory / DESCRIPTIONS, index=False)
    clustering.properties.to_parquet(directory / PROPERTIES, index=False)
    clustering.class_properties.to_parquet(directory / CLASS_PROPERTIES, index=False)
    dimension = len(clustering.properties["centre"].iloc[0])
    meta = {"classes": classes, "k": len(clustering.properties), "seed": seed, "embedder": embedder,
            "dimension": dimension}
    (directory / META).write_text(json.dumps(meta, indent=2))
    (directory / "quality.json").write_text(json.dumps(clustering.quality, indent=2))
    (directory / "quality.md").write_text(quality_markdown(clustering.quality))


def plan_cluster(embedded: StagePlan, params: ClusterParams) -> StagePlan:
    return StagePlan("cluster", CLUSTER_VERSION, {"k": params.k, "seed": params.seed, "algorithm": "kmeans"},
                     {"embeddings": embedded.ref()})


def run_cluster(embedded_dir: Path, plan: StagePlan, params: ClusterParams, store: ArtifactStore) -> Path:
    """The label-space artifact for the embeddings in ``embedded_dir``."""

    def build(out: Path) -> None:
        table = pd.read_parquet(embedded_dir / "embeddings.parquet")
        embedder = json.loads((embedded_dir / "embed_report.json").read_text())["model"]
        write_label_space(out, cluster_embeddings(table, params.k, params.seed), embedder, params.seed)

    return materialize(store, plan, build)
