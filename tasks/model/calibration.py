"""Calibrated stacking (Chao et al. 2016; SPNet's threshold): the seen classes' scores lowered by
γ before the argmax, swept over γ to trace the seen-unseen curve.

Class scores are cosines cos(p, m_c) of non-negative vectors, in [0, 1], so γ is in those
units and the sweep's grid (``GRID``) spans every decision: at γ = -1 no unseen class is ever
predicted, at γ = 1 no seen one. A pixel's prediction at γ depends only on its best seen class,
its best unseen class and d = (best seen score) - (best unseen score): the seen class wins
where d >= γ. ``CalibrationSweepMetric`` (``prolab_models.evaluation``) counts pixels per
grid cell of d; here those counts become per-class IoU at every γ, seen and unseen mIoU, hIoU,
the area under the curve (AUSUC) and the γ chosen on another split (``choose``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

GRID = np.round(np.linspace(-1.0, 1.0, 201), 2)  # step 0.01
CHOICE_RULE = ("the γ of the grid with the highest hIoU on the training split's images that hold a held-out "
               "class, never on the reported split (ties: the smallest γ)")


def sweep_ious(counts: Mapping[str, np.ndarray], grid: np.ndarray = GRID) -> np.ndarray:
    """Per-class IoU (percent; NaN without ground truth or prediction) at every γ of ``grid``,
    shape (len(grid), C), from ``CalibrationSweepMetric``'s counts: ``seen_pred``/``seen_hit``
    and ``unseen_pred``/``unseen_hit`` (len(grid) + 1, C), the pixels whose cell of d is k,
    predicted as / correctly as class c by the best seen / unseen class; ``truth`` (C,), the
    ground-truth pixels of each class. At γ_j the seen class wins in cells k > j."""
    def seen_side(name: str) -> np.ndarray:  # sum over cells k > j
        return np.cumsum(counts[name][::-1], axis=0)[::-1][1:]

    def unseen_side(name: str) -> np.ndarray:  # sum over cells k <= j
        return np.cumsum(counts[name], axis=0)[:-1]

    predicted = seen_side("seen_pred") + unseen_side("unseen_pred")
    hits = seen_side("seen_hit") + unseen_side("unseen_hit")
    union = counts["truth"][None, :] + predicted - hits
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, 100.0 * hits / union, np.nan)


def harmonic(seen: float | None, unseen: float | None) -> float | None:
    """hIoU = 2 S U / (S + U); 0 when both are 0, None when either is missing."""
    if seen is None or unseen is None:
        return None
    return 0.0 if seen + unseen == 0 else 2 * seen * unseen / (seen + unseen)


def seen_unseen(ious: np.ndarray, unseen: np.ndarray) -> tuple[float | None, float | None]:
    """Mean IoU over the seen and over the unseen classes of one row, NaN classes left out."""
    def mean(values: np.ndarray) -> float | None:
        values = values[~np.isnan(values)]
        return float(values.mean()) if len(values) else None

    return mean(ious[~unseen]), mean(ious[unseen])


def ausuc(seen: Sequence[float], unseen: Sequence[float]) -> float:
    """Area under the seen-unseen curve (Chao et al.), both axes as fractions of 100, in percent
    of the unit square: the points sorted by unseen mIoU (then seen, falling), trapezoids
    between them. Each point is one γ of the sweep; its ends are the γ where one side is never
    predicted, so the area does not depend on one chosen γ."""
    points = sorted(zip(unseen, seen), key=lambda point: (point[0], -point[1]))
    x = np.array([p[0] for p in points]) / 100
    y = np.array([p[1] for p in points]) / 100
    return float(100 * np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def curve(counts: Mapping[str, np.ndarray], unseen: np.ndarray, grid: np.ndarray = GRID) -> list[dict[str, Any]]:
    """``{"gamma", "mIoU_seen", "mIoU_unseen", "hIoU"}`` at every γ of the grid (percent, 2 decimals)."""
    rows = []
    for gamma, ious in zip(grid, sweep_ious(counts, grid)):
        seen, unseen_mean = seen_unseen(ious, unseen)
        rows.append({"gamma": float(gamma), "mIoU_seen": _round(seen), "mIoU_unseen": _round(unseen_mean),
                     "hIoU": _round(harmonic(seen, unseen_mean))})
    return rows


def choose(rows: Sequence[Mapping[str, Any]]) -> float:
    """The γ with the highest hIoU (the smallest such γ); 0 when no γ has one."""
    scored = [(row["hIoU"], -row["gamma"]) for row in rows if row["hIoU"] is not None]
    return -max(scored)[1] if scored else 0.0


def summary(reported: Sequence[Mapping[str, Any]], chosen_on: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """AUSUC of the reported split's curve, and its seen, unseen and hIoU at the γ chosen on the
    other split's curve (``chosen_on``, the same grid; None when there is none to choose on:
    then no γ is chosen)."""
    usable = [row for row in reported if row["mIoU_seen"] is not None and row["mIoU_unseen"] is not None]
    area = _round(ausuc([r["mIoU_seen"] for r in usable], [r["mIoU_unseen"] for r in usable])) if usable else None
    if chosen_on is None:
        return {"AUSUC": area, "chosen_gamma": None, "mIoU_seen": None, "mIoU_unseen": None, "hIoU": None}
    gamma = choose(chosen_on)
    at = next(row for row in reported if row["gamma"] == gamma)
    return {"AUSUC": area, "chosen_gamma": gamma, **{key: at[key] for key in ("mIoU_seen", "mIoU_unseen", "hIoU")}}


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)
