"""Synthetic street scenes in CamVid's SegNet layout, so the whole pipeline runs anywhere in minutes.

Each class has its own colour, texture and shape (a sky gradient, facades with window grids,
asphalt with lane marks, paved sidewalks, mottled tree crowns, cars with cabins and wheels,
thin pedestrians), and thin poles stay unlabelled, so a small model can learn the classes and the
ignore value is exercised. Every image is drawn from its own random stream seeded by
``(seed, split, index)``: the same seed gives the same bytes, and resizing one split leaves the
images of the others unchanged.

    python -m data.demo --out data/generated/demo --seed 0     # prints the dataset root
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

DEMO_CLASSES: tuple[str, ...] = ("sky", "building", "road", "sidewalk", "tree", "car", "person")
# Cityscapes' colours for the same classes, so pictures read the same across datasets.
DEMO_PALETTE: tuple[tuple[int, int, int], ...] = (
    (70, 130, 180),
    (70, 70, 70),
    (128, 64, 128),
    (244, 35, 232),
    (107, 142, 35),
    (0, 0, 142),
    (220, 20, 60),
)
IGNORE_INDEX = 255
SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_ROOT = Path(__file__).resolve().parent / "generated" / "demo"
CLASSES_FILE = "classes.json"
# Part of the stamp: bump it whenever the drawing changes, so older datasets are regenerated.
GENERATOR_VERSION = 1

SKY, BUILDING, ROAD, SIDEWALK, TREE, CAR, PERSON = range(len(DEMO_CLASSES))

_CAR_COLOURS = np.array(
    [(170, 30, 30), (40, 60, 150), (215, 215, 215), (35, 35, 40), (150, 155, 160), (200, 170, 40)],
    dtype=np.float32,
)


class _Scene:
    """An RGB image and its label map, painted together from back to front."""

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.rng = rng
        self.height, self.width = height, width
        self.yy, self.xx = np.mgrid[0:height, 0:width].astype(np.float32)
        self.image = np.zeros((height, width, 3), np.float32)
        self.label = np.full((height, width), IGNORE_INDEX, np.uint8)

    def paint(self, mask: np.ndarray, label: int, colour: np.ndarray) -> None:
        """Set ``label`` and ``colour`` (one RGB triple, or a full-frame texture) under ``mask``."""
        self.label[mask] = label
        self.image[mask] = colour[mask] if colour.ndim == 3 else colour

    def uniform(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))

    def noise(self, sigma: float) -> np.ndarray:
        return self.rng.normal(0.0, sigma, (self.height, self.width, 3)).astype(np.float32)

    def disc(self, cy: float, cx: float, radius: float) -> np.ndarray:
        return (self.yy - cy) ** 2 + (self.xx - cx) ** 2 <= radius**2

    def box(self, top: float, bottom: float, left: float, right: float) -> np.ndarray:
        return (self.yy >= top) & (self.yy < bottom) & (self.xx >= left) & (self.xx < right)


class _Street:
    """The street's perspective: a horizon, a vanishing point and the road's edges below it."""

    def __init__(self, scene: _Scene) -> None:
        rng, h, w = scene.rng, scene.height, scene.width
        self.horizon = h * rng.uniform(0.35, 0.5)
        self.vanish_x = w * rng.uniform(0.4, 0.6)
        self.bottom_centre = w * rng.uniform(0.4, 0.6)
        self.half_width = w * rng.uniform(0.28, 0.42)
        self.depth = h - self.horizon

    def depth_at(self, y: np.ndarray | float) -> np.ndarray | float:
        """0 at the horizon, 1 at the bottom row: how near (and so how large) things there are."""
        return np.clip((y - self.horizon) / self.depth, 0.0, None)

    def road_edges(self, y: np.ndarray | float) -> tuple[np.ndarray | float, np.ndarray | float]:
        t = self.depth_at(y)
        left = self.vanish_x + (self.bottom_centre - self.half_width - self.vanish_x) * t
        right = self.vanish_x + (self.bottom_centre + self.half_width - self.vanish_x) * t
        return left, right


def render_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One street scene: an ``(H, W, 3)`` uint8 RGB image and its ``(H, W)`` uint8 label map."""
    scene = _Scene(rng, height, width)
    street = _Street(scene)
    _paint_sky(scene, street)
    road = _paint_ground(scene, street)
    _paint_buildings(scene, street, road)
    # Things standing on the ground, far to near, so nearer ones occlude farther ones.
    things = [(_paint_tree, rng.integers(0, 4)), (_paint_pole, rng.integers(0, 3)),
              (_paint_car, rng.integers(0, 5)), (_paint_person, rng.integers(0, 5))]
    placed = [(rng.uniform(0.2, 1.0), painter) for painter, count in things for _ in range(count)]
    for depth, painter in sorted(placed, key=lambda item: item[0]):
        painter(scene, street, float(depth))
    image = scene.image * rng.uniform(0.85, 1.15) + scene.noise(3.0)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), scene.label


def _paint_sky(scene: _Scene, street: _Street) -> None:
    top = np.array([scene.uniform(50, 90), scene.uniform(110, 150), scene.uniform(185, 230)],
                   np.float32)
    t = np.clip(scene.yy / street.horizon, 0.0, 1.0)[..., None]
    gradient = top * (1 - t) + np.minimum(top + 45.0, 250.0) * t + scene.noise(2.0)
    scene.paint(scene.yy < street.horizon, SKY, gradient)


def _paint_ground(scene: _Scene, street: _Street) -> np.ndarray:
    """Road between the edges, paved sidewalk outside them; returns the road mask."""
    yy, xx = scene.yy, scene.xx
    below = yy >= street.horizon
    left, right = street.road_edges(yy)
    road = below & (xx >= left) & (xx <= right)

    pave = scene.uniform(165, 200) * np.array([1.0, 0.95, 0.92], np.float32)
    period = int(scene.rng.integers(5, 9))
    joints = ((xx % period) < 1) | ((yy % period) < 1)
    sidewalk_texture = pave - 30.0 * joints[..., None] + scene.noise(4.0)
    scene.paint(below & ~road, SIDEWALK, sidewalk_texture)

    asphalt = scene.uniform(60, 90) * np.array([1.0, 1.0, 1.05], np.float32)
    road_texture = asphalt + scene.noise(7.0)
    if scene.rng.random() < 0.8:
        t = street.depth_at(yy)
        centre = street.vanish_x + (street.bottom_centre - street.vanish_x) * t
        dashes = np.sin(np.log1p(np.maximum(yy - street.horizon, 0.0)) * 7.0) > 0.2
        marking = road & dashes & (np.abs(xx - centre) < 0.5 + 1.5 * t)
        road_texture[marking] = 220.0
    scene.paint(road, ROAD, road_texture)
    return road


def _paint_buildings(scene: _Scene, street: _Street, road: np.ndarray) -> None:
    """Rows of facades on both sides, leaving sky visible around the vanishing point."""
    rng, w = scene.rng, scene.width
    gap = w * rng.uniform(0.03, 0.12)
    for start, stop, step in ((0.0, street.vanish_x - gap, 1), (float(w), street.vanish_x + gap, -1)):
        x = start
        while (stop - x) * step > 0:
            width = w * rng.uniform(0.12, 0.3)
            left, right = sorted((x, x + step * width))
            left, right = max(left, min(start, stop)), min(right, max(start, stop))
            x += step * width
            if rng.random() < 0.15:
                continue
            top = street.horizon * rng.uniform(0.05, 0.6)
            bottom = street.horizon + street.depth * rng.uniform(0.02, 0.15)
            _paint_facade(scene, top, bottom, left, right, road)


def _paint_facade(scene: _Scene, top: float, bottom: float, left: float, right: float,
                  road: np.ndarray) -> None:
    rng = scene.rng
    tone = scene.uniform(90, 170) * np.array(
        [(1.0, 1.0, 1.0), (1.0, 0.8, 0.65), (1.0, 0.95, 0.8)][rng.integers(0, 3)], np.float32)
    texture = tone + scene.noise(5.0)
    span_x, span_y = int(rng.integers(6, 10)), int(rng.integers(7, 11))
    columns = ((scene.xx - left - 2) % span_x) < span_x // 2
    windows = columns & (((scene.yy - top - 3) % span_y) < span_y // 2)
    windows &= scene.box(top + 2, bottom - 4, left + 2, right - 2)
    glass = (np.array([40, 50, 70], np.float32) if rng.random() < 0.7
             else np.array([200, 190, 120], np.float32))
    texture[windows] = glass + scene.noise(4.0)[windows]
    scene.paint(scene.box(top, bottom, left, right) & ~road, BUILDING, texture)


def _sidewalk_x(scene: _Scene, street: _Street, y: float, margin: float) -> float | None:
    """A random x on the sidewalk at row ``y``, at least ``margin`` from the road and the frame."""
    left, right = street.road_edges(y)
    sides = [(margin, left - margin), (right + margin, scene.width - margin)]
    sides = [(low, high) for low, high in sides if high > low]
    if not sides:
        return None
    low, high = sides[int(scene.rng.integers(0, len(sides)))]
    return scene.uniform(low, high)


def _ground_y(street: _Street, depth: float) -> float:
    return street.horizon + depth * street.depth


def _paint_tree(scene: _Scene, street: _Street, depth: float) -> None:
    y = _ground_y(street, depth)
    trunk_w = max(1.5, depth * 0.04 * scene.width)
    x = _sidewalk_x(scene, street, y, trunk_w)
    if x is None:
        return
    trunk_h = depth * 0.5 * scene.height
    radius = depth * scene.uniform(0.16, 0.26) * scene.height
    crown = np.zeros_like(scene.label, dtype=bool)
    for _ in range(int(scene.rng.integers(3, 6))):
        cy = y - trunk_h + scene.rng.normal(0, 0.3 * radius)
        cx = x + scene.rng.normal(0, 0.4 * radius)
        crown |= scene.disc(cy, cx, radius * scene.uniform(0.5, 0.8))
    trunk = scene.box(y - trunk_h, y, x - trunk_w / 2, x + trunk_w / 2)
    scene.paint(trunk, TREE, np.array([90, 60, 35], np.float32) + scene.noise(6.0))
    leaves = np.array([scene.uniform(40, 80), scene.uniform(100, 150), scene.uniform(20, 50)],
                      np.float32)
    mottle = scene.noise(18.0) * np.array([0.6, 1.0, 0.5], np.float32)
    scene.paint(crown, TREE, leaves + mottle)


def _paint_pole(scene: _Scene, street: _Street, depth: float) -> None:
    """A thin grey pole, left unlabelled: the demo's ignore region."""
    y = _ground_y(street, depth)
    width = max(1.0, depth * 0.02 * scene.width)
    x = _sidewalk_x(scene, street, y, width)
    if x is None:
        return
    pole = scene.box(y - depth * 0.9 * scene.height, y, x - width / 2, x + width / 2)
    scene.paint(pole, IGNORE_INDEX, np.array([115, 115, 110], np.float32) + scene.noise(3.0))


def _paint_car(scene: _Scene, street: _Street, depth: float) -> None:
    y = _ground_y(street, depth)
    width = depth * scene.uniform(0.28, 0.38) * scene.width
    height = 0.6 * width
    left, right = street.road_edges(y)
    x = scene.uniform(left, right)
    body_colour = _CAR_COLOURS[scene.rng.integers(0, len(_CAR_COLOURS))] + scene.rng.normal(0, 10, 3)
    body = scene.box(y - 0.55 * height, y - 0.12 * height, x - width / 2, x + width / 2)
    cabin = scene.box(y - height, y - 0.55 * height, x - 0.35 * width, x + 0.35 * width)
    texture = body_colour.astype(np.float32) + scene.noise(3.0)
    windows = scene.box(y - 0.92 * height, y - 0.6 * height, x - 0.29 * width, x + 0.29 * width)
    windows &= np.abs(scene.xx - x) > 0.03 * width
    texture[windows] = np.array([30, 40, 55], np.float32)
    wheels = (scene.disc(y - 0.14 * height, x - 0.3 * width, 0.14 * height)
              | scene.disc(y - 0.14 * height, x + 0.3 * width, 0.14 * height))
    texture[wheels] = np.array([20, 20, 20], np.float32)
    scene.paint(body | cabin | wheels, CAR, texture)


def _paint_person(scene: _Scene, street: _Street, depth: float) -> None:
    y = _ground_y(street, depth)
    height = max(8.0, depth * scene.uniform(0.35, 0.5) * scene.height)
    x = _sidewalk_x(scene, street, y, 0.15 * height)
    if x is None:
        return
    skin = scene.uniform(120, 230) * np.array([1.0, 0.8, 0.65], np.float32)
    shirt = scene.rng.uniform(30, 220, 3).astype(np.float32)
    trousers = scene.rng.uniform(20, 80, 3).astype(np.float32)
    head = scene.disc(y - 0.9 * height, x, 0.1 * height)
    torso = scene.box(y - 0.8 * height, y - 0.45 * height, x - 0.14 * height, x + 0.14 * height)
    legs = (scene.box(y - 0.45 * height, y, x - 0.11 * height, x - 0.02 * height)
            | scene.box(y - 0.45 * height, y, x + 0.02 * height, x + 0.11 * height))
    texture = scene.noise(4.0)
    texture[head] += skin
    texture[torso] += shirt
    texture[legs] += trousers
    scene.paint(head | torso | legs, PERSON, texture)


def _stamp(seed: int, counts: dict[str, int], size: tuple[int, int]) -> dict:
    return {"version": GENERATOR_VERSION, "seed": seed, "counts": counts, "size": list(size)}


def _file_names(split: str, count: int) -> list[str]:
    return [f"{split}_{index:04d}.png" for index in range(count)]


def _is_complete(root: Path, stamp: dict) -> bool:
    """True when ``root`` holds every file of the dataset that ``stamp`` describes."""
    try:
        recorded = json.loads((root / CLASSES_FILE).read_text()).get("generator")
    except (OSError, ValueError):
        return False
    if recorded != stamp:
        return False
    return all(
        (root / folder / name).is_file()
        for split, count in stamp["counts"].items()
        for folder in (split, f"{split}annot")
        for name in _file_names(split, count)
    )


def _is_generated(root: Path) -> bool:
    """True for an empty folder or one this module wrote, the only ones it may replace."""
    if not any(root.iterdir()):
        return True
    try:
        return "generator" in json.loads((root / CLASSES_FILE).read_text())
    except (OSError, ValueError):
        return False


def generate_demo_dataset(
    root: Path,
    seed: int = 0,
    n_train: int = 48,
    n_val: int = 16,
    size: tuple[int, int] = (128, 160),
    n_test: int = 16,
) -> Path:
    """Write the demo dataset under ``root`` (SegNet layout + ``classes.json``) and return ``root``.

    Idempotent: a complete dataset with the same parameters is left untouched (its mtimes too,
    so fingerprints stay stable). The dataset is written to a sibling temporary folder and
    renamed into place, so a reader never sees a half-written one.
    """
    root = Path(root)
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for split, count in counts.items():
        if count < 1:
            raise ValueError(f"n_{split} = {count}: expected at least one image")
    height, width = size
    if height < 32 or width < 32:
        raise ValueError(f"size = {size}: expected at least 32 x 32 pixels")
    if seed < 0:
        raise ValueError(f"seed = {seed}: expected a non-negative integer")
    stamp = _stamp(seed, counts, (height, width))
    if _is_complete(root, stamp):
        log.info("%s: demo dataset already complete (seed %d)", root, seed)
        return root
    if root.exists() and not _is_generated(root):
        raise FileExistsError(
            f"{root}: exists and is not a generated demo dataset (no {CLASSES_FILE} with a "
            f"'generator' entry); refusing to overwrite it")

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        for split_index, split in enumerate(SPLITS):
            (staging / split).mkdir()
            (staging / f"{split}annot").mkdir()
            for index, name in enumerate(_file_names(split, counts[split])):
                image, label = render_scene(np.random.default_rng([seed, split_index, index]), height, width)
                Image.fromarray(image).save(staging / split / name, format="PNG")
                Image.fromarray(label).save(staging / f"{split}annot" / name, format="PNG")
        classes = {
            "source": "synthetic street scenes drawn by data/demo.py",
            "ignore_index": IGNORE_INDEX,
            "classes": list(DEMO_CLASSES),
            "palette": [list(colour) for colour in DEMO_PALETTE],
            "generator": stamp,
        }
        (staging / CLASSES_FILE).write_text(json.dumps(classes, indent=2) + "\n")
        if root.exists():
            shutil.rmtree(root)
        try:
            staging.rename(root)
        except OSError:
            # Another process may have finished the same dataset first.
            if not _is_complete(root, stamp):
                raise
            shutil.rmtree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("%s: wrote the demo dataset (seed %d, %s)", root, seed, counts)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_ROOT, help="dataset root (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=48)
    parser.add_argument("--n-val", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=16)
    parser.add_argument("--size", type=int, nargs=2, default=(128, 160), metavar=("H", "W"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    try:
        root = generate_demo_dataset(args.out, args.seed, args.n_train, args.n_val, tuple(args.size),
                                     args.n_test)
    except (ValueError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
