"""The stages' pictures: figures for the Prefect UI, and predict's label maps, overlays and tiles.

The figures (label spaces, training curves, IoU, confusion, overlays and property maps of
evaluate's images) are shown inline in the UI as data URIs, so each file is kept under
``MAX_PNG_BYTES``: drawn at 80 dpi, and a PNG that still comes out larger is re-encoded with a
256-colour palette, then downscaled. Predict's pictures are its outputs, one set per image at
the image's size, drawn with numpy and PIL in milliseconds. Figures use matplotlib's object API (``Figure``, rendered by Agg), so
nothing touches pyplot's global state or the user's backend, and tasks may draw concurrently.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from PIL import Image

MAX_PNG_BYTES = 150_000
DPI = 80
_STYLE = {"font.size": 7, "axes.titlesize": 8, "axes.labelsize": 7, "legend.fontsize": 7}
# Keys of mmengine's scalars.json that describe the run rather than the model.
_BOOKKEEPING = {"step", "iter", "epoch", "time", "data_time", "memory"}


def _fit_png(data: bytes, max_bytes: int) -> bytes:
    """``data`` if small enough, else a palette PNG, downscaled until it is."""
    if len(data) <= max_bytes:
        return data
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    while True:
        buffer = io.BytesIO()
        palette_image = image.quantize(256, method=Image.Quantize.FASTOCTREE)
        palette_image.save(buffer, format="PNG", optimize=True)
        data = buffer.getvalue()
        if len(data) <= max_bytes or min(image.size) <= 16:
            return data
        scale = min(0.9, max(0.5, math.sqrt(max_bytes / len(data))))
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)


def _save(fig: Figure, path: str | Path, max_bytes: int = MAX_PNG_BYTES) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.05,
                facecolor="white", metadata={"Software": None})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_fit_png(buffer.getvalue(), max_bytes))
    return path


def png_data_uri(path: str | Path, max_bytes: int = MAX_PNG_BYTES) -> str:
    """``data:image/png;base64,...`` for the PNG at ``path``, shrunk to ``max_bytes`` of PNG
    (the base64 text is a third longer) if it is larger."""
    data = _fit_png(Path(path).read_bytes(), max_bytes)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _colourise(label: np.ndarray, palette: Sequence[Sequence[int]],
               ignore_index: int) -> np.ndarray:
    """RGB picture of a label map; ignored and out-of-palette pixels are black."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8)[:256]
    lut[ignore_index] = 0
    return lut[np.clip(label, 0, 255).astype(np.uint8)]


def _overlay(image: np.ndarray, label: np.ndarray, palette: Sequence[Sequence[int]],
             ignore_index: int, alpha: float) -> np.ndarray:
    colours = _colourise(label, palette, ignore_index).astype(np.float32)
    blended = image.astype(np.float32) * (1 - alpha) + colours * alpha
    ignored = label == ignore_index
    blended[ignored] = image[ignored] * 0.5
    return blended.astype(np.uint8)


def save_overlays(
    images: Sequence[np.ndarray],
    gts: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    palette: Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: str | Path,
    ignore_index: int = 255,
    alpha: float = 0.6,
) -> Path:
    """One row per image: the image | ground truth over it | prediction over it (with its pixel
    accuracy), and a legend of the classes that appear. Images are (H, W, 3) uint8 RGB, label
    maps (H, W) class indices; ignored pixels are shown dimmed."""
    if not (len(images) == len(gts) == len(preds)) or not images:
        raise ValueError(f"expected as many images, ground truths and predictions (>= 1), got "
                         f"{len(images)}, {len(gts)}, {len(preds)}")
    height, width = np.asarray(images[0]).shape[:2]
    panel = 2.2
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(3 * panel, len(images) * panel * height / width + 0.5),
                     layout="constrained")
        axes = fig.subplots(len(images), 3, squeeze=False)
        present: set[int] = set()
        for row, (image, gt, pred) in enumerate(zip(images, gts, preds)):
            image, gt, pred = np.asarray(image), np.asarray(gt), np.asarray(pred)
            if not (image.shape[:2] == gt.shape == pred.shape):
                raise ValueError(f"row {row}: image {image.shape[:2]}, ground truth {gt.shape} and "
                                 f"prediction {pred.shape} differ in size")
            valid = gt != ignore_index
            accuracy = float((pred[valid] == gt[valid]).mean()) if valid.any() else float("nan")
            present.update(int(v) for v in np.unique(np.concatenate([gt[valid], pred.ravel()]))
                           if v < len(class_names))
            panels = (image, _overlay(image, gt, palette, ignore_index, alpha),
                      _overlay(image, pred, palette, ignore_index, alpha))
            titles = ("image", "ground truth", f"prediction ({accuracy:.0%} pixels right)")
            for ax, picture, title in zip(axes[row], panels, titles):
                ax.imshow(picture, interpolation="nearest")
                ax.set_title(title)
                ax.set_axis_off()
        handles = [Patch(color=np.asarray(palette[index]) / 255, label=class_names[index])
                   for index in sorted(present)]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6) or 1,
                   frameon=False)
        return _save(fig, path)


def save_activation_maps(
    image: np.ndarray,
    activations: np.ndarray,
    property_names: Sequence[str],
    path: str | Path,
    top: int = 8,
) -> Path:
    """The image and its ``top`` most active properties (by mean activation), each map over the
    image with the property's name as its title: which properties the model saw, and where.

    ``activations`` is (K, h, w), any resolution (stretched over the image); sigmoid outputs in
    [0, 1] are drawn on a fixed 0..1 scale so pictures compare across images.
    """
    image, activations = np.asarray(image), np.asarray(activations, dtype=np.float32)
    if activations.ndim != 3 or activations.shape[0] != len(property_names):
        raise ValueError(f"activations {activations.shape}: expected (K, H, W) with K = "
                         f"{len(property_names)} property names")
    scores = activations.reshape(len(activations), -1).mean(axis=1)
    order = np.argsort(-scores, kind="stable")[:top]
    low, high = float(activations.min()), float(activations.max())
    if low >= 0.0 and high <= 1.0:
        low, high = 0.0, 1.0
    height, width = image.shape[:2]
    columns = 3
    rows = math.ceil((len(order) + 1) / columns)
    grey = image.mean(axis=2) if image.ndim == 3 else image
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(columns * 2.0, rows * (2.0 * height / width + 0.45)),
                     layout="constrained")
        axes = fig.subplots(rows, columns, squeeze=False).ravel()
        axes[0].imshow(image)
        axes[0].set_title("image")
        mappable = None
        for ax, index in zip(axes[1:], order):
            ax.imshow(grey, cmap="gray")
            mappable = ax.imshow(activations[index], cmap="inferno", alpha=0.65, vmin=low,
                                 vmax=high, extent=(-0.5, width - 0.5, height - 0.5, -0.5),
                                 interpolation="bilinear")
            name = textwrap.shorten(property_names[index], width=48, placeholder="...")
            ax.set_title(textwrap.fill(name, 28) + f"\nmean {scores[index]:.2f}")
        for ax in axes:
            ax.set_axis_off()
        if mappable is not None:
            fig.colorbar(mappable, ax=list(axes), shrink=0.5, label="activation")
        return _save(fig, path)


def save_confusion_matrix(conf: np.ndarray, class_names: Sequence[str], path: str | Path) -> Path:
    """Row-normalised confusion (rows: ground truth, columns: prediction), so each row reads as
    "where the pixels of this class went"; class names are written up to 40 classes."""
    conf = np.asarray(conf, dtype=np.float64)
    n = len(class_names)
    if conf.shape != (n, n):
        raise ValueError(f"confusion matrix {conf.shape}: expected ({n}, {n}) for {n} class names")
    totals = conf.sum(axis=1, keepdims=True)
    rates = np.divide(conf, totals, out=np.zeros_like(conf), where=totals > 0)
    side = float(np.clip(0.28 * n + 1.8, 3.0, 10.0))
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(side + 0.8, side), layout="constrained")
        ax = fig.subplots()
        mappable = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        if n <= 40:
            ax.set_xticks(range(n), class_names, rotation=90)
            ax.set_yticks(range(n), class_names)
        if n <= 12:
            for (row, column), rate in np.ndenumerate(rates):
                if rate >= 0.005:
                    ax.text(column, row, f"{rate:.0%}", ha="center", va="center", fontsize=6,
                            color="white" if rate > 0.5 else "black")
        ax.set_xlabel("predicted")
        ax.set_ylabel("ground truth")
        ax.set_title("confusion, row-normalised")
        fig.colorbar(mappable, ax=ax, shrink=0.7)
        return _save(fig, path)


def save_iou_bars(per_class_iou: Mapping[str, float], path: str | Path) -> Path:
    """Per-class IoU as bars, best first, with the mean as a line; classes without a value
    (NaN: absent from the evaluated images) are listed last as n/a. Values in 0..1 or in
    percent, as mmseg reports them."""
    if not per_class_iou:
        raise ValueError("per_class_iou is empty: expected {class name: IoU}")
    items = sorted(per_class_iou.items(),
                   key=lambda item: (math.isnan(item[1]), -np.nan_to_num(item[1])))
    names = [name for name, _ in items]
    values = np.array([value for _, value in items], dtype=np.float64)
    limit = 100.0 if np.nanmax(np.append(values, 0.0)) > 1.0 else 1.0
    mean = float(np.nanmean(values)) if not np.isnan(values).all() else float("nan")
    colours = matplotlib.colormaps["RdYlGn"](np.nan_to_num(values) / limit)
    with matplotlib.rc_context(_STYLE):
        height = float(np.clip(0.17 * len(names) + 0.8, 1.8, 24.0))
        fig = Figure(figsize=(4.5, height), layout="constrained")
        ax = fig.subplots()
        positions = np.arange(len(names))
        ax.barh(positions, np.nan_to_num(values), color=colours)
        for position, value in zip(positions, values):
            text = "n/a" if math.isnan(value) else f"{value:.{1 if limit == 100.0 else 2}f}"
            ax.text(np.nan_to_num(value) + limit * 0.01, position, text, va="center", fontsize=6)
        if not math.isnan(mean):
            ax.axvline(mean, color="black", linestyle="--", linewidth=0.8)
            ax.set_title(f"IoU per class (mean {mean:.{1 if limit == 100.0 else 2}f})")
        ax.set_yticks(positions, names)
        ax.invert_yaxis()
        ax.set_xlim(0, limit * 1.1)
        ax.set_xlabel("IoU (%)" if limit == 100.0 else "IoU")
        return _save(fig, path)


def save_seen_unseen_curve(curves: Mapping[str, Sequence[Mapping[str, float | None]]], path: str | Path,
                           marked: float | None = None) -> Path:
    """Calibrated stacking's seen-unseen curves: unseen mIoU across, seen mIoU up, one line per
    curve (``{label: [{"gamma", "mIoU_seen", "mIoU_unseen"}, ...]}``, percent), the point at γ =
    ``marked`` ringed on the first one."""
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(4.0, 3.4), layout="constrained")
        ax = fig.subplots()
        for label, rows in curves.items():
            points = [(r["mIoU_unseen"], r["mIoU_seen"]) for r in rows
                      if r["mIoU_unseen"] is not None and r["mIoU_seen"] is not None]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", markersize=2, linewidth=1,
                    label=label)
        first = next(iter(curves.values()), [])
        at = next((r for r in first if marked is not None and r["gamma"] == marked), None)
        if at is not None and at["mIoU_unseen"] is not None and at["mIoU_seen"] is not None:
            ax.plot([at["mIoU_unseen"]], [at["mIoU_seen"]], "o", fillstyle="none", color="black",
                    label=f"chosen γ = {marked:g}")
        ax.set_xlabel("unseen mIoU (%)")
        ax.set_ylabel("seen mIoU (%)")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_title("seen vs unseen mIoU over γ")
        ax.legend(loc="upper right")
        return _save(fig, path)


def _colliding_rows(multi_hot: np.ndarray) -> set[int]:
    """Rows equal to another row: classes the label space cannot tell apart."""
    seen: dict[bytes, list[int]] = {}
    for index, row in enumerate(multi_hot):
        seen.setdefault(row.tobytes(), []).append(index)
    return {index for group in seen.values() if len(group) > 1 for index in group}


def save_label_space_matrix(multi_hot: np.ndarray, class_names: Sequence[str],
                            path: str | Path) -> Path:
    """The class x property matrix of the label space; classes whose rows collide (identical
    property sets, so indistinguishable) are named in red."""
    multi_hot = np.asarray(multi_hot) > 0
    n, k = multi_hot.shape
    if n != len(class_names):
        raise ValueError(
            f"multi-hot {multi_hot.shape}: expected {len(class_names)} rows, one per class")
    collisions = _colliding_rows(multi_hot)
    with matplotlib.rc_context(_STYLE):
        size = (float(np.clip(0.05 * k + 2.5, 4.0, 10.0)), float(np.clip(0.16 * n + 1.2, 2.2, 14.0)))
        fig = Figure(figsize=size, layout="constrained")
        ax = fig.subplots()
        ax.imshow(multi_hot, cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        if n <= 60:
            ax.set_yticks(range(n), class_names)
            for index, tick in enumerate(ax.get_yticklabels()):
                tick.set_color("red" if index in collisions else "black")
        ax.set_xlabel(f"property (K = {k})")
        ax.set_title(f"{n} classes x {k} properties; {multi_hot.sum(axis=1).mean():.1f} properties "
                     f"a class; {len(collisions)} classes in collisions")
        return _save(fig, path)


def save_class_similarity(cosine: np.ndarray, class_names: Sequence[str], near: Iterable[tuple[int, int]],
                          path: str | Path) -> Path:
    """Class x class cosine of the property sets: the label space's view of which classes look
    alike. Colliding pairs (cosine 1) are boxed in red, other near-colliding pairs in orange."""
    cosine = np.asarray(cosine, dtype=np.float64)
    n = len(class_names)
    if cosine.shape != (n, n):
        raise ValueError(f"similarity {cosine.shape}: expected ({n}, {n}) for {n} class names")
    with matplotlib.rc_context(_STYLE):
        side = float(np.clip(0.28 * n + 1.8, 3.0, 10.0))
        fig = Figure(figsize=(side + 0.8, side), layout="constrained")
        ax = fig.subplots()
        mappable = ax.imshow(cosine, cmap="magma_r", vmin=0.0, vmax=1.0, interpolation="nearest")
        marked = 0
        for i, j in near:
            colour = "red" if cosine[i, j] >= 1.0 - 1e-9 else "orange"
            for row, column in ((i, j), (j, i)):
                ax.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor=colour, linewidth=1.5))
            marked += 1
        if n <= 40:
            ax.set_xticks(range(n), class_names, rotation=90)
            ax.set_yticks(range(n), class_names)
        ax.set_title(f"property-set cosine between classes; {marked} near-colliding pairs boxed")
        fig.colorbar(mappable, ax=ax, shrink=0.7)
        return _save(fig, path)


def save_cluster_size_histogram(sizes: Sequence[int], path: str | Path) -> Path:
    """How many descriptions fell in each property: many singletons or one giant cluster both
    mean K does not suit the descriptions."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.size == 0:
        raise ValueError("sizes is empty: expected one size per property")
    largest = int(sizes.max())
    bins = np.arange(0.5, largest + 1.5) if largest <= 60 else 40
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(4.0, 2.6), layout="constrained")
        ax = fig.subplots()
        ax.hist(sizes, bins=bins, color="#4c72b0")
        ax.axvline(float(sizes.mean()), color="black", linestyle="--", linewidth=0.8)
        ax.set_xlabel("descriptions in the property")
        ax.set_ylabel("properties")
        ax.set_title(f"{sizes.size} properties, {int(sizes.sum())} descriptions, "
                     f"mean {sizes.mean():.1f}, {int((sizes == 1).sum())} singletons")
        return _save(fig, path)


def read_scalars(path: str | Path) -> list[dict]:
    """The records of an mmengine ``scalars.json`` (``vis_data/``): one JSON object a line."""
    path = Path(path)
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError as error:
                raise ValueError(f"{path}: line {number} is not JSON ({error})") from None
    return records


def save_curves(records: Iterable[Mapping[str, object]], path: str | Path) -> Path:
    """Training curves from mmengine's logged scalars: losses, learning rate, and validation
    metrics (from the records without a learning rate), each against the iteration ``step``."""
    train: dict[str, list[tuple[float, float]]] = {}
    val: dict[str, list[tuple[float, float]]] = {}
    for position, record in enumerate(records):
        step = float(record.get("step", record.get("iter", position)))
        series = train if "lr" in record or any("loss" in key for key in record) else val
        for key, value in record.items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if numeric and key not in _BOOKKEEPING:
                series.setdefault(key, []).append((step, float(value)))
    panels = [
        ("loss", {key: points for key, points in train.items() if "loss" in key}, "log"),
        ("learning rate", {key: points for key, points in train.items() if key.endswith("lr")}, "linear"),
        ("validation", val, "linear"),
    ]
    panels = [(title, series, scale) for title, series, scale in panels if series]
    if not panels:
        raise ValueError("no losses, learning rates or metrics among the records")
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(2.8 * len(panels), 2.4), layout="constrained")
        for ax, (title, series, scale) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
            for key, points in sorted(series.items()):
                steps, values = zip(*points)
                ax.plot(steps, values, label=key, linewidth=1.0,
                        marker="o" if len(points) < 3 else None)
            positive = all(value > 0 for points in series.values() for _, value in points)
            ax.set_yscale(scale if positive else "linear")
            ax.set_title(title)
            ax.set_xlabel("iteration")
            ax.legend(frameon=False)
        return _save(fig, path)


# Pictures written per image by the predict stage: numpy and PIL rather than matplotlib, so each
# costs milliseconds, not the inference's order of time.

PNG_FAST = 1  # zlib level: a fifth of the default's encoding time, files about a third larger


def save_label_map(label: np.ndarray, palette: Sequence[Sequence[int]], path: str | Path) -> Path:
    """A label map as a palette PNG: each pixel's value is its class index (what a program
    reads back with ``np.array(Image.open(path))``) and the palette holds the classes' colours
    (what a viewer shows). More than 256 classes: a 16-bit grey PNG of the indices."""
    label = np.asarray(label)
    if len(palette) > 256:
        Image.fromarray(label.astype(np.uint16)).save(path, compress_level=PNG_FAST)
        return Path(path)
    picture = Image.fromarray(label.astype(np.uint8), mode="P")
    flat = np.zeros((256, 3), np.uint8)
    flat[: len(palette)] = np.asarray(palette, np.uint8)
    picture.putpalette(flat.ravel().tolist())
    picture.save(path, compress_level=PNG_FAST)
    return Path(path)


def save_overlay(image: np.ndarray, label: np.ndarray, palette: Sequence[Sequence[int]], path: str | Path,
                 alpha: float = 0.5) -> Path:
    """The image with each pixel's class colour blended over it (``alpha``), as mmseg's
    visualiser draws a prediction."""
    Image.fromarray(_overlay(np.asarray(image), np.asarray(label), palette, 255, alpha)).save(
        path, compress_level=PNG_FAST)
    return Path(path)


@functools.cache
def _inferno() -> np.ndarray:
    return (matplotlib.colormaps["inferno"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def save_activation_tiles(image: np.ndarray, maps: Sequence[np.ndarray], captions: Sequence[str],
                          path: str | Path, columns: int = 3, tile_width: tuple[int, int] = (240, 320)) -> Path:
    """The image, then each map (H, W, values in 0..1) as a heat map over the image's grey
    version, a two-line caption under each tile, ``columns`` tiles a row, each tile scaled into
    ``tile_width`` (min, max): which properties fired, and where."""
    from PIL import ImageDraw

    image = np.asarray(image)
    height, width = image.shape[:2]
    scale = min(max(width, tile_width[0]), tile_width[1]) / width
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    grey = image.mean(axis=2, keepdims=True) if image.ndim == 3 else image[..., None]
    tiles = [Image.fromarray(image).resize(size, Image.BILINEAR)]
    for activation in maps:
        heat = _inferno()[np.clip(np.asarray(activation) * 255, 0, 255).astype(np.uint8)]
        tiles.append(Image.fromarray((0.35 * grey + 0.65 * heat).astype(np.uint8)).resize(size, Image.BILINEAR))
    caption_height = 26
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (columns * size[0], rows * (size[1] + caption_height)), "white")
    draw = ImageDraw.Draw(sheet)
    characters = size[0] // 6  # PIL's default bitmap font: about 6 pixels a character
    for index, (tile, caption) in enumerate(zip(tiles, ["image", *captions])):
        x, y = (index % columns) * size[0], (index // columns) * (size[1] + caption_height)
        sheet.paste(tile, (x, y))
        text = "\n".join(textwrap.wrap(caption, characters, max_lines=2, placeholder="..."))
        draw.multiline_text((x + 2, y + size[1] + 1), text, fill="black", spacing=1)
    sheet.save(path, compress_level=PNG_FAST)
    return Path(path)
