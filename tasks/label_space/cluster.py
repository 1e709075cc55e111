"""The cluster stage: k-means over description embeddings gives the property-level label space.

Procedure as in the paper: ``KMeans(n_clusters=K, random_state=seed, n_init="auto")``;
class c has property k iff one of c's descriptions fell in cluster k. The files are the
format documented in ``prolab_models.label_space``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prolab_models.label_space import CLASS_PROPERTIES, DESCRIPTIONS, META, PROPERTIES, property_column
from tasks.errors import ProLabError
from tasks.label_space.quality import (
    NEAR_COSINE,
    NEAR_HAMMING,
    Separation,
    near_colliding_pairs,
    quality_markdown,
    quality_report,
)
from tasks.params import EndToEndParams
from tasks.reports import Report, image, read_json
from tasks.stage import StagePlan, declared_params, materialize
from tasks.store import ArtifactStore

VERSION = "3"  # 3: the key holds the declared parameters (READS), by name
READS = ("label_space.cluster",)
MAX_MEMBERS = 12  # per property row of the label-space table in the UI; the rest are counted


class ClusterError(ProLabError, ValueError):
    """K or the embeddings do not allow a clustering."""


@dataclass(frozen=True)
class Clustering:
    descriptions: pd.DataFrame  # the embeddings table plus property_id
    properties: pd.DataFrame
    class_properties: pd.DataFrame
    quality: dict


def check_k(k: int, n_texts: int, source: str | None = None) -> None:
    """K properties need at least K descriptions (``source``: where they are counted, when that
    is known before they are embedded: a descriptors file)."""
    if not 1 <= k <= n_texts:
        where = f" in {source}" if source else ""
        raise ClusterError(f"k={k}: must be between 1 and the number of descriptions ({n_texts}{where})")


def cluster_embeddings(table: pd.DataFrame, k: int, seed: int) -> Clustering:
    """Cluster the ``vector`` column of an embeddings table into ``k`` properties."""
    from sklearn.cluster import KMeans  # here: a K refused before a flow run (``check_k``) spares its 3 s import

    check_k(k, len(table))
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


def plan(params: EndToEndParams, inputs: Mapping[str, str]) -> StagePlan:
    return StagePlan("cluster", VERSION, {**declared_params(params, READS), "algorithm": "kmeans"},
                     {"embeddings": inputs["embeddings"]}, sources=())


def run(plan: StagePlan, params: EndToEndParams, inputs: Mapping[str, Path], store: ArtifactStore) -> Path:
    """The label-space artifact for the embeddings of ``inputs["embeddings"]``."""
    cluster = params.label_space.cluster

    def build(out: Path) -> None:
        table = pd.read_parquet(inputs["embeddings"] / "embeddings.parquet")
        embedder = json.loads((inputs["embeddings"] / "embed_report.json").read_text())["model"]
        write_label_space(out, cluster_embeddings(table, cluster.k, cluster.seed), embedder, cluster.seed)

    return materialize(store, plan, build)


def run_name(params: EndToEndParams) -> str:
    return f"cluster k={params.label_space.cluster.k}"


def _members(members: Any) -> str:
    members = list(members)
    shown = "; ".join(members[:MAX_MEMBERS])
    return shown + (f"; ... (+{len(members) - MAX_MEMBERS})" if len(members) > MAX_MEMBERS else "")


def reports(directory: Path) -> list[Report]:
    """The label space: properties (name, size, members), the class x property matrix,
    the cluster sizes, and collisions (classes the label space cannot tell apart)."""
    from tasks.visualization import save_class_similarity, save_cluster_size_histogram, save_label_space_matrix

    found = []
    quality = read_json(directory / "quality.json") or {}
    if (directory / PROPERTIES).is_file():
        properties = pd.read_parquet(directory / PROPERTIES, columns=["property_id", "name", "size", "n_classes",
                                                                     "members"])
        rows = [{"property": int(row.property_id), "name": row.name, "descriptions": int(row.size),
                 "classes": int(row.n_classes), "members": _members(row.members)}
                for row in properties.sort_values("property_id").itertuples()]
        found.append(Report("label-space", "table", rows, _quality_summary(quality, len(rows))))
    meta = read_json(directory / META)
    with tempfile.TemporaryDirectory(prefix="prolab-report-") as scratch:
        if meta is not None and (directory / CLASS_PROPERTIES).is_file():
            matrix = pd.read_parquet(directory / CLASS_PROPERTIES).sort_values("class_index")
            columns = [property_column(i) for i in range(int(meta["k"]))]
            picture = save_label_space_matrix(matrix[columns].to_numpy(), list(matrix["class_name"]),
                                              Path(scratch) / "matrix.png")
            found.append(image("label-space-matrix", picture, "class x property matrix; colliding classes in red"))
            multi_hot = matrix[columns].to_numpy()
            picture = save_class_similarity(Separation.of(multi_hot).cosine, list(matrix["class_name"]),
                                            near_colliding_pairs(multi_hot, **_near(quality)),
                                            Path(scratch) / "similarity.png")
            found.append(image("label-space-similarity", picture,
                               "class x class similarity of the property sets; near-colliding pairs boxed"))
        sizes = quality.get("cluster_sizes", {}).get("all")
        if sizes:
            picture = save_cluster_size_histogram(sizes, Path(scratch) / "sizes.png")
            found.append(image("label-space-sizes", picture, "descriptions per property"))
    if (directory / "quality.md").is_file():
        found.append(Report("label-space-quality", "markdown", (directory / "quality.md").read_text(),
                            "collisions, cluster sizes, properties per class"))
    return found


def _near(quality: dict[str, Any]) -> dict[str, Any]:
    thresholds = quality.get("near_thresholds", {})
    return {"near_cosine": thresholds.get("cosine", NEAR_COSINE), "near_hamming": thresholds.get("hamming", NEAR_HAMMING)}


def _quality_summary(quality: dict[str, Any], k: int) -> str:
    if not quality:
        return f"**{k} properties**"
    sizes = quality.get("cluster_sizes", {})
    collisions = quality.get("collisions", [])
    text = (f"**{quality.get('classes')} classes, {k} properties**; descriptions per property: "
            f"min {sizes.get('min')}, median {sizes.get('median')}, max {sizes.get('max')}; "
            f"collisions: {len(collisions)}, near-collisions: {len(quality.get('near_collisions', []))}")
    return text + "".join(f"\n- {', '.join(group)}" for group in collisions)
