"""How well a label space tells its classes apart, from its class x property multi-hot.

Two classes with the same property set are indistinguishable to the model (a collision); two
whose sets are nearly the same (multi-hot cosine at least ``near_cosine``, or at most
``near_hamming`` properties apart) are barely distinguishable, and a class whose set is inside
another's is predicted as the other whenever its own few properties are missed. The repair
stage asks the LLM to separate the pairs that ``near_colliding_pairs`` finds; the quality report
says how far apart every class is from its nearest neighbour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

NEAR_COSINE = 0.8
NEAR_HAMMING = 1


@dataclass(frozen=True)
class Separation:
    """Pairwise similarity of the classes' property sets."""

    cosine: np.ndarray  # (N, N) cosine of the multi-hot rows; 1 on the diagonal
    hamming: np.ndarray  # (N, N) number of properties in which two rows differ

    @classmethod
    def of(cls, multi_hot: np.ndarray) -> Separation:
        rows = (np.asarray(multi_hot) > 0).astype(np.int64)
        counts = rows.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):  # sqrt of a product of counts: exact for equal rows
            cosine = (rows @ rows.T) / np.sqrt(np.outer(counts, counts).astype(np.float64))
        cosine = np.nan_to_num(cosine, nan=0.0)
        np.fill_diagonal(cosine, 1.0)
        hamming = (rows[:, None, :] != rows[None, :, :]).sum(axis=2)
        return cls(cosine, hamming)

    def is_near(self, i: int, j: int, near_cosine: float = NEAR_COSINE, near_hamming: int = NEAR_HAMMING) -> bool:
        return bool(self.cosine[i, j] >= near_cosine or self.hamming[i, j] <= near_hamming)


def near_colliding_pairs(multi_hot: np.ndarray, near_cosine: float = NEAR_COSINE,
                         near_hamming: int = NEAR_HAMMING) -> list[tuple[int, int]]:
    """The pairs ``(i, j)``, ``i < j``, of classes whose property sets are identical or nearly so."""
    separation = Separation.of(multi_hot)
    n = len(separation.cosine)
    return [(i, j) for i in range(n) for j in range(i + 1, n) if separation.is_near(i, j, near_cosine, near_hamming)]


def quality_report(classes: Sequence[str], multi_hot: np.ndarray, sizes: np.ndarray,
                   near_cosine: float = NEAR_COSINE, near_hamming: int = NEAR_HAMMING,
                   dropped: Mapping[str, int] | None = None) -> dict:
    """Collisions, near-collisions, every class's nearest class, the closest pair, subset pairs,
    shared properties, cluster sizes, properties per class and (when given) the descriptions
    that verification dropped, by reason."""
    multi_hot = np.asarray(multi_hot) > 0
    separation = Separation.of(multi_hot)
    n = len(classes)
    groups: dict[bytes, list[str]] = {}
    for name, row in zip(classes, multi_hot):
        groups.setdefault(row.tobytes(), []).append(name)
    nearest = {}
    for i, name in enumerate(classes):
        if n < 2:
            break
        others = [j for j in range(n) if j != i]
        j = max(others, key=lambda o: (separation.cosine[i, o], -separation.hamming[i, o]))
        nearest[name] = {"class": classes[j], "cosine": round(float(separation.cosine[i, j]), 4),
                         "hamming": int(separation.hamming[i, j])}
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    closest = max(pairs, key=lambda p: (separation.cosine[p], -separation.hamming[p]), default=None)
    subsets = [[classes[i], classes[j]] for i in range(n) for j in range(n)
               if i != j and multi_hot[i].any() and not (multi_hot[i] & ~multi_hot[j]).any()
               and (multi_hot[j] & ~multi_hot[i]).any()]
    owners = multi_hot.sum(axis=0)
    report = {
        "classes": n,
        "properties": int(multi_hot.shape[1]),
        "collisions": [names for names in groups.values() if len(names) > 1],
        "near_collisions": [
            {"classes": [classes[i], classes[j]], "cosine": round(float(separation.cosine[i, j]), 4),
             "hamming": int(separation.hamming[i, j])}
            for i, j in pairs if separation.is_near(i, j, near_cosine, near_hamming)],
        "near_thresholds": {"cosine": near_cosine, "hamming": near_hamming},
        "nearest": nearest,
        "closest_pair": None if closest is None else {
            "classes": [classes[closest[0]], classes[closest[1]]],
            "cosine": round(float(separation.cosine[closest]), 4),
            "hamming": int(separation.hamming[closest])},
        "min_hamming": int(min((separation.hamming[p] for p in pairs), default=0)),
        "subsets": subsets,
        "cluster_sizes": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max()),
                          "all": [int(s) for s in sizes]},
        "properties_per_class": {name: int(k) for name, k in zip(classes, multi_hot.sum(axis=1))},
        "properties_used_by_one_class": int((owners == 1).sum()),
        "shared_properties": [int(p) for p in np.flatnonzero(owners > 1)],
        "unused_properties": [int(p) for p in np.flatnonzero(owners == 0)],
    }
    if dropped is not None:
        report["dropped_descriptions"] = dict(dropped)
    return report


def quality_markdown(quality: dict) -> str:
    """The report as a page for people: headline figures, then one row per class."""
    sizes = quality["cluster_sizes"]
    lines = [
        "# Label-space quality",
        "",
        f"- classes: {quality['classes']}, properties: {quality['properties']}",
        f"- cluster sizes: min {sizes['min']}, median {sizes['median']:g}, max {sizes['max']}",
        f"- properties used by one class only: {quality['properties_used_by_one_class']}; "
        f"shared by several classes (no class owns them alone): {len(quality['shared_properties'])}",
        f"- collisions (classes with identical property sets): {len(quality['collisions'])}",
    ]
    lines += [f"  - {', '.join(group)}" for group in quality["collisions"]]
    thresholds = quality["near_thresholds"]
    lines.append(f"- near-collisions (multi-hot cosine >= {thresholds['cosine']} or at most "
                 f"{thresholds['hamming']} properties apart): {len(quality['near_collisions'])}")
    lines += [f"  - {', '.join(p['classes'])}: cosine {p['cosine']:.2f}, {p['hamming']} apart"
              for p in quality["near_collisions"]]
    closest = quality["closest_pair"]
    if closest is not None:
        lines.append(f"- closest pair: {', '.join(closest['classes'])} (cosine {closest['cosine']:.2f}, "
                     f"{closest['hamming']} properties apart); fewest properties apart over all pairs: "
                     f"{quality['min_hamming']}")
    lines.append(f"- classes whose properties are all another's: {len(quality['subsets'])}")
    lines += [f"  - {a} within {b}" for a, b in quality["subsets"]]
    if "dropped_descriptions" in quality:
        dropped = quality["dropped_descriptions"]
        lines.append("- descriptions dropped by verification: "
                     + (", ".join(f"{reason} {count}" for reason, count in dropped.items()) or "none"))
    lines += ["", "| class | properties | nearest class | cosine | properties apart |", "|---|---|---|---|---|"]
    for name, count in quality["properties_per_class"].items():
        near = quality["nearest"].get(name)
        lines.append(f"| {name} | {count} | " + (f"{near['class']} | {near['cosine']:.2f} | {near['hamming']} |"
                                                  if near else "| | |"))
    return "\n".join(lines) + "\n"
