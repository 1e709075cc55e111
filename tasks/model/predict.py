"""The predict stage: a trained run on a user's own images -> label maps, overlays, property maps.

What mmseg's ``MMSegInferencer`` writes for a segmentation model, ``pred/<image>.png`` (the
label map: class indices, with the dataset's palette) and ``vis/<image>.png`` (the prediction
over the image), and what a property model adds: ``properties/<image>.png``, the maps of the
image's most active properties; ``queries/<n>-<words>/<image>.png``, the maps of the
properties nearest to a text query (embedded with the label space's embedder); and classes
it never trained on, scored from their descriptions without retraining
(``tasks.label_space.transfer``, ``PropertyEncoderDecoder.use_classes``).
``predictions.json`` says what each image holds (class shares, top properties), which files
were skipped and why, each query's nearest properties and each new class's.

Inference is evaluate's: the config's test pipeline without its annotation steps, the image
decoded as ``LoadImageFromFile`` decodes it, ``model.test_step``, one image at a time, on the
CPU unless CUDA is present. Any size and the formats OpenCV reads; a file that does not
decode is named and skipped. In the store, a prediction's key hashes the run's, the images'
names and content, the new classes' descriptions (or names and the LLM asked), the queries and
the settings: an unchanged rerun computes nothing.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prolab_models.errors import LabelSpaceMismatchError, ProLabInputError
from prolab_models.label_space import LabelSpace, load_label_space
from tasks.class_names import check_distinct
from tasks.files import loads_json, sha256_file, sha256_json
from tasks.label_space.descriptors import DescriptorError, validate_descriptions
from tasks.label_space.transfer import (
    ClassRows,
    EmbedFn,
    class_rows,
    rank_properties,
    require_expressed,
    scoring_rows,
)
from tasks.model.checkpoints import last_checkpoint, loading_checkpoint
from tasks.model.runs import build_config, config_dataset_classes, config_dataset_palette, run_record
from tasks.params import SIMILARITY_FLOOR, EndToEndParams
from tasks.reports import Report, artifact_key, image, markdown_table, read_json
from tasks.stage import StagePlan, declared_params, input_ref, materialize
from tasks.store import ArtifactStore

VERSION = "2"  # 2: the key holds the declared parameters (READS), by name
# What predict's key reads. The images, the new classes' file and a label space given by path are
# keyed by their content (the images' and label space's references, the classes' words), not
# by where they lie.
READS = ("predict",)
UNKEYED = ("predict.images", "predict.classes", "predict.label_space")
SUMMARY = "predictions.json"
LABEL_MAPS, OVERLAYS, PROPERTY_MAPS, QUERY_MAPS = "pred", "vis", "properties", "queries"
# What OpenCV decodes (mmcv's cv2 backend); in a directory, other files are listed as skipped.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jp2")
# Pipeline steps that read ground truth: inference on a user's image has none.
ANNOTATION_STEPS = ("LoadAnnotations", "CheckLabelRange")
UI_IMAGES = 4  # images whose pictures the Prefect UI shows


class PredictInputError(ProLabInputError):
    """Images, new classes or queries that cannot be predicted on."""


# ------------------------------------------------------------------------------ inputs


def image_files(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """The files to predict on, in order: each file as given; each directory's files with an
    image suffix (sorted, not recursive). Also the directories' other files (to be named as
    skipped). A missing path, or a directory with no image file, is refused by name."""
    if not paths:
        raise PredictInputError("no images given: name image files or directories")
    files, others = [], []
    for path in paths:
        path = Path(path).expanduser()
        if path.is_dir():
            entries = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            found = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
            if not found:
                raise PredictInputError(f"{path}: no images (no file ending in {', '.join(IMAGE_SUFFIXES[:5])}, ...; "
                                        f"{len(entries)} other file(s))")
            files += found
            others += [p for p in entries if p not in found]
        elif path.is_file():
            files.append(path)
        else:
            raise PredictInputError(f"{path}: no such image file or directory")
    return files, others


def read_class_words(path: Path) -> dict[str, list[str]] | list[str]:
    """``--classes``: the paper's ``{class: [description, ...]}`` format, or a list of class
    names for the LLM to describe; checked as descriptor files are."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DescriptorError(f"--classes {path}: no such file")
    try:
        data = loads_json(path.read_text(encoding="utf-8-sig"), str(path))
    except ValueError as error:
        raise DescriptorError(f"--classes {path}: not JSON ({error})") from None
    if isinstance(data, list):
        names = [name.strip() for name in data if isinstance(name, str) and name.strip()]
        if not names or len(names) != len(data):
            raise DescriptorError(f"{path}: a list of classes must hold non-empty class names only")
        check_distinct(data, str(path))
        if len(set(names)) != len(names):
            raise DescriptorError(f"{path}: a class is named twice")
        return names
    return validate_descriptions(data, str(path))


def _output_names(files: Sequence[Path]) -> list[str]:
    """A name per input file (its stem; ``-2``, ``-3`` after a repeated one), for its outputs."""
    names: list[str] = []
    for path in files:
        name, count = path.stem, 1
        while name in names:
            count += 1
            name = f"{path.stem}-{count}"
        names.append(name)
    return names


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "query"


# ------------------------------------------------------------------------------ the model


def _device(device: str | None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def _build_model(cfg: Any, checkpoint: Path, device: str) -> torch.nn.Module:
    """The model as evaluate's runner builds and loads it (mmseg's ``init_model`` steps)."""
    import prolab_models.register  # noqa: F401  (the plugin, and checkpoints loadable with weights_only)
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    from mmseg.registry import MODELS

    init_default_scope(cfg.get("default_scope", "mmseg"))
    cfg.model.train_cfg = None
    model = MODELS.build(cfg.model)
    try:
        with loading_checkpoint(checkpoint):
            load_checkpoint(model, str(checkpoint), map_location="cpu", logger="silent")
    except LabelSpaceMismatchError as error:
        raise LabelSpaceMismatchError(f"{checkpoint}: {error}") from None
    return model.to(device).eval()


def _inference_pipeline(cfg: Any) -> tuple[Any, dict]:
    """The test pipeline without its annotation steps, fed a decoded image; and how
    ``LoadImageFromFile`` decodes (so the pixels are evaluate's)."""
    from mmcv.transforms import Compose

    steps = [dict(step) for step in cfg.test_dataloader.dataset.pipeline]
    loader = next((step for step in steps if step["type"] == "LoadImageFromFile"), {})
    decode = {"flag": loader.get("color_type", "color"), "backend": loader.get("imdecode_backend", "cv2")}
    kept = [dict(type="LoadImageFromNDArray", to_float32=loader.get("to_float32", False))]
    kept += [step for step in steps if step["type"] not in (*ANNOTATION_STEPS, "LoadImageFromFile")]
    return Compose(kept), decode


def _decode(path: Path, decode: dict) -> np.ndarray | None:
    """BGR pixels as ``LoadImageFromFile`` gives them; None for a file OpenCV cannot decode."""
    import cv2
    import mmcv

    try:
        return mmcv.imfrombytes(path.read_bytes(), **decode)
    except cv2.error:  # an empty file
        return None


# ------------------------------------------------------------------------------ predict


@dataclass
class PredictSummary:
    out_dir: Path
    images: list[str]
    skipped: list[dict[str, str]]
    queries: list[dict[str, Any]]
    seconds_per_image: float
    classes: list[str] = field(default_factory=list)


def _palette(cfg: Any, classes: Sequence[str]) -> list[list[int]]:
    """The dataset's colour of each class it has; distinct generated colours for the others."""
    dataset = cfg.test_dataloader.dataset
    known = dict(zip(config_dataset_classes(dataset), config_dataset_palette(dataset)))
    rng = np.random.default_rng(0)
    palette = []
    for name in classes:
        colour = known.get(name)
        while colour is None or colour in palette:
            colour = [int(v) for v in rng.integers(0, 256, 3)]
        palette.append(colour)
    return palette


def check_calibration(gamma: float, adds_classes: bool) -> None:
    """γ lowers the trained classes' scores against new ones: it needs classes added to them."""
    if gamma and not adds_classes:
        raise PredictInputError(f"--calibration {gamma}: it lowers the trained classes' scores against new ones; "
                                f"give --classes NEW.json --add, or leave it at 0")


def predict(
    run: Path,
    images: Sequence[Path],
    out_dir: Path,
    config: str | Path = "demo",
    cfg_options: dict | None = None,
    label_space: Path | None = None,
    classes: Mapping[str, Sequence[str]] | None = None,
    add: bool = False,
    queries: Sequence[str] = (),
    top_properties: int = 6,
    query_properties: int = 3,
    floor: float = SIMILARITY_FLOOR,
    embed: EmbedFn | None = None,
    device: str | None = None,
    calibration: float = 0.0,
) -> PredictSummary:
    """Predict with ``run`` (a work dir or a checkpoint) on ``images`` (files or directories),
    writing label maps, overlays, property maps and ``predictions.json`` into ``out_dir``.

    ``label_space``: the one the run trained on (default: the run's own); ``classes``: new
    classes' descriptions, scored instead of the trained classes or, with ``add``, after them;
    ``queries``: properties in words; ``embed``: the texts' embedding function (default: the
    label space's embedder through the default store's vector cache); ``calibration``: with
    ``add``, the trained classes' scores are lowered by this γ before the argmax, so that the new
    classes, scored from words alone, can win (``tasks.model.calibration``).
    """
    from mmengine.dataset import pseudo_collate

    out_dir = Path(out_dir)
    check_calibration(calibration, bool(classes) and add)
    files, others = image_files(images)
    checkpoint = last_checkpoint(Path(run))
    trained = load_label_space(label_space or _run_label_space(Path(run)))
    if embed is None and (classes or queries):
        from tasks.label_space.embed import text_embedder

        embed = text_embedder(trained.embedder)
    scoring, new = _scoring(trained, classes, add, embed, floor)
    query_results = _queries(trained, queries, embed, query_properties)

    cfg = build_config(config, trained.path, out_dir, None, cfg_options, num_classes=trained.num_classes)
    device = _device(device)
    model = _build_model(cfg, checkpoint, device)
    if scoring.classes != trained.classes or not np.array_equal(scoring.multi_hot, trained.multi_hot):
        model.use_classes(torch.from_numpy(scoring.multi_hot))
    if calibration:
        model.calibrate(torch.tensor([name in trained.classes for name in scoring.classes]), calibration)
    pipeline, decode = _inference_pipeline(cfg)
    palette = _palette(cfg, scoring.classes)
    folders = [LABEL_MAPS, OVERLAYS, PROPERTY_MAPS] + [q["folder"] for q in query_results]
    for folder in folders:
        (out_dir / folder).mkdir(parents=True, exist_ok=True)

    records, skipped = [], [{"file": p.name, "reason": "not an image file (by its suffix)"} for p in others]
    started = time.perf_counter()
    for path, name in zip(files, _output_names(files)):
        pixels = _decode(path, decode)
        if pixels is None:
            skipped.append({"file": path.name, "reason": "not an image OpenCV can decode (corrupt, or another format)"})
            continue
        with torch.no_grad():
            out = model.test_step(pseudo_collate([pipeline(dict(img=pixels))]))[0]
        label = out.pred_sem_seg.data[0].cpu().numpy()
        properties = out.pred_properties.data.float().cpu().numpy()
        records.append(_write_outputs(out_dir, name, pixels[..., ::-1], label, properties, scoring.classes, palette,
                                      trained.property_names, top_properties, query_results))
    seconds = time.perf_counter() - started
    if not records:
        raise PredictInputError("no image could be read: " + "; ".join(f"{s['file']}: {s['reason']}" for s in skipped))

    summary = {
        "checkpoint": str(checkpoint), "label_space_key": trained.key, "device": device,
        "seconds_per_image": round(seconds / len(files), 4),
        "classes": [{"name": c, "colour": colour, "new": c in new.classes,
                     "properties": [trained.property_names[i] for i in np.flatnonzero(row)]}
                    for c, colour, row in zip(scoring.classes, palette, scoring.multi_hot)],
        "new_classes": {c: [{"text": r.text, "property_id": int(r.property_id), "similarity": round(r.similarity, 3),
                             "property": trained.property_names[r.property_id] if r.property_id >= 0 else None}
                            for r in new.assignments[new.assignments["class_name"] == c].itertuples()]
                        for c in new.classes},
        "queries": query_results, "images": records, "skipped": skipped,
    }
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=2))
    return PredictSummary(out_dir, [r["name"] for r in records], skipped, query_results, summary["seconds_per_image"],
                          scoring.classes)


def _run_label_space(run: Path) -> Path:
    record = run_record(run)
    if record.label_space is None:
        raise PredictInputError(f"{run}: the run does not say which label space it trained on; give --label-space")
    return record.label_space


def _scoring(trained: LabelSpace, classes: Mapping[str, Sequence[str]] | None, add: bool, embed: EmbedFn | None,
             floor: float) -> tuple[ClassRows, ClassRows]:
    """The classes scored (trained ones, new ones, or both) and the new ones' rows."""
    none = ClassRows.none(trained.num_properties)
    if not classes:
        return scoring_rows(trained, none, trained.classes), none
    clash = [name for name in classes if name in trained.classes] if add else []
    if clash:
        raise PredictInputError(f"--classes: {', '.join(map(repr, clash))} already trained; give new classes "
                                f"other names, or leave out --add")
    new = class_rows(classes, trained.centres, embed, floor)
    require_expressed(new, floor)
    order = [*trained.classes, *new.classes] if add else list(new.classes)
    return scoring_rows(trained, new, order), new


def _queries(trained: LabelSpace, queries: Sequence[str], embed: EmbedFn | None, top: int) -> list[dict[str, Any]]:
    """Each query's nearest properties (cosine to their centres), best first."""
    if not queries:
        return []
    vectors = embed(list(queries))
    return [{"text": text, "folder": f"{QUERY_MAPS}/{number}-{_slug(text)}",
             "properties": [{"id": i, "name": trained.property_names[i], "similarity": round(s, 3)}
                            for i, s in rank_properties(vector, trained.centres, top)]}
            for number, (text, vector) in enumerate(zip(queries, vectors), start=1)]


def _write_outputs(out_dir: Path, name: str, rgb: np.ndarray, label: np.ndarray, properties: np.ndarray,
                   classes: Sequence[str], palette: Sequence[Sequence[int]], property_names: Sequence[str],
                   top: int, queries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    from tasks.visualization import save_activation_tiles, save_label_map, save_overlay

    save_label_map(label, palette, out_dir / LABEL_MAPS / f"{name}.png")
    save_overlay(rgb, label, palette, out_dir / OVERLAYS / f"{name}.png")
    means = properties.reshape(len(properties), -1).mean(axis=1)
    order = np.argsort(-means, kind="stable")[:top]
    save_activation_tiles(rgb, [properties[i] for i in order],
                          [f"p{i:02d} {means[i]:.2f} {property_names[i]}" for i in order],
                          out_dir / PROPERTY_MAPS / f"{name}.png")
    for query in queries:
        save_activation_tiles(rgb, [properties[p["id"]] for p in query["properties"]],
                              [f"p{p['id']:02d} cos {p['similarity']:.2f} {p['name']}" for p in query["properties"]],
                              out_dir / query["folder"] / f"{name}.png")
    counts = np.bincount(label.ravel(), minlength=len(classes))
    return {"name": name, "height": int(label.shape[0]), "width": int(label.shape[1]),
            "classes": {classes[i]: round(float(counts[i]) / label.size, 4) for i in np.argsort(-counts) if counts[i]},
            "top_properties": [{"id": int(i), "name": property_names[i], "mean": round(float(means[i]), 3)}
                               for i in order]}


# ------------------------------------------------------------------------------ the stage


def wanted(params: EndToEndParams) -> bool:
    """The end-to-end flow predicts only when it is given images."""
    return bool(params.predict.images)


def _image_identity(files: Sequence[Path], others: Sequence[Path]) -> str:
    """The images' names and content, in order (a renamed file renames its outputs)."""
    return "sha256:" + sha256_json({"images": [[p.name, sha256_file(p)] for p in files],
                                    "others": sorted(p.name for p in others)})


def _class_words_identity(params: EndToEndParams) -> dict[str, Any] | None:
    """What the new classes' rows depend on: their descriptions, or their names and the LLM
    that describes them; and the verification settings."""
    predict = params.predict
    if predict.classes is None:
        return None
    words = read_class_words(predict.classes)
    verify = params.label_space.verify
    verifies = verify.enabled if verify.enabled is not None else isinstance(words, list)
    identity: dict[str, Any] = {"verify": verify.model_dump(exclude={"enabled"}) if verifies else None}
    if isinstance(words, dict):
        return identity | {"descriptions_sha256": sha256_json(words)}
    from tasks.label_space.describe import llm_model, prompt_style
    from tasks.label_space.llm.prompts import prompt_version

    describe = params.label_space.describe
    return identity | {"names": words, "model": llm_model(describe), "prompt_version": prompt_version(prompt_style(describe))}


def plan(params: EndToEndParams, inputs: Mapping[str, str]) -> StagePlan:
    """``inputs["run"]``: the training run's reference. Images, new classes and queries are
    checked here, before any stage runs."""
    from tasks.model.runs import config_sha256

    predict = params.predict
    files, others = image_files(predict.images)
    if predict.add and predict.classes is None:
        raise PredictInputError("--add: give --classes NEW.json, the classes to add to the trained ones")
    check_calibration(predict.calibration, predict.add)  # --add without --classes is refused above
    settings = {**declared_params(params, READS, UNKEYED), "config_sha256": config_sha256(params.train),
                "classes": _class_words_identity(params)}
    refs = {"run": inputs["run"], "images": _image_identity(files, others)}
    if predict.label_space is not None:
        refs["label_space"] = input_ref(predict.label_space)
    return StagePlan("predict", VERSION, settings, refs)


def _new_class_descriptions(params: EndToEndParams, embed: EmbedFn, store: ArtifactStore,
                            out: Path) -> dict[str, list[str]] | None:
    """The new classes' descriptions: read, or asked of the LLM (its answers cached as the
    describe stage caches them); then verified, as the label-space stages do, when on (by
    default for LLM-written ones). The verification table is kept beside the outputs."""
    if params.predict.classes is None:
        return None
    words = read_class_words(params.predict.classes)
    if isinstance(words, dict):
        descriptions = words
    else:
        from tasks.label_space.describe import describe_classes, llm_settings
        from tasks.label_space.llm.cache import DESCRIBE_ANSWERS

        with llm_settings(params.label_space.describe) as settings:
            descriptions = describe_classes(words, settings, store.root / DESCRIBE_ANSWERS).descriptions
    verify = params.label_space.verify
    if not (verify.enabled if verify.enabled is not None else isinstance(words, list)):
        return descriptions
    from tasks.label_space.verify import examples_for, kept_descriptions, verify_descriptions

    table = verify_descriptions(descriptions, embed, verify, examples_for(params) if isinstance(words, list) else {})
    table.to_parquet(out / "new_classes_verification.parquet", index=False)
    return kept_descriptions(table, verify.keep_flagged)[0]


def run(plan: StagePlan, params: EndToEndParams, inputs: Mapping[str, Path], store: ArtifactStore) -> Path:
    """Label maps, overlays, property (and query) maps and ``predictions.json``."""
    from tasks.label_space.embed import text_embedder

    asked, settings = params.predict, params.train

    def build(out: Path) -> None:
        trained = load_label_space(asked.label_space or _run_label_space(inputs["run"]))
        embed = text_embedder(trained.embedder, store.embedding_cache)
        descriptions = _new_class_descriptions(params, embed, store, out)
        predict(inputs["run"], asked.images, out, settings.config, settings.cfg_options, trained.path, descriptions,
                asked.add, asked.query, asked.top_properties, asked.query_properties, asked.floor, embed,
                calibration=asked.calibration)

    return materialize(store, plan, build)


def run_name(params: EndToEndParams) -> str:
    count = len(params.predict.images)
    return f"predict on {count} path{'s' if count != 1 else ''}"


def reports(directory: Path) -> list[Report]:
    """Per image, its classes and most active properties; what was skipped; each query's and
    each new class's properties; and the first images' overlays and property maps."""
    summary = read_json(directory / SUMMARY)
    if summary is None:
        return []
    rows = [{"image": r["name"], "size": f"{r['height']}x{r['width']}",
             "classes": ", ".join(f"{c} {share:.0%}" for c, share in list(r["classes"].items())[:4]),
             "most active properties": "; ".join(p["name"] for p in r["top_properties"][:3])}
            for r in summary["images"]]
    facts = {"images": len(summary["images"]), "skipped": len(summary["skipped"]), "device": summary["device"],
             "seconds per image": summary["seconds_per_image"],
             "classes": ", ".join(c["name"] + (" (new)" if c["new"] else "") for c in summary["classes"])}
    text = markdown_table(facts)
    for skipped in summary["skipped"]:
        text += f"\n- skipped {skipped['file']}: {skipped['reason']}"
    found = [Report("predict", "table", rows, text)]
    if summary["queries"] or summary["new_classes"]:
        lines = ["# Words to properties", ""]
        for query in summary["queries"]:
            lines.append(f"- query **{query['text']}**: " + "; ".join(
                f"{p['name']} ({p['similarity']:.2f})" for p in query["properties"]))
        for name, assignments in summary["new_classes"].items():
            lines.append(f"- new class **{name}**: " + "; ".join(
                f"{a['text']} -> {a['property'] or 'unexpressed'} ({a['similarity']:.2f})" for a in assignments))
        found.append(Report("predict-words", "markdown", "\n".join(lines), "queries and new classes, as properties"))
    for record in summary["images"][:UI_IMAGES]:
        for folder, caption in ((OVERLAYS, "prediction over the image"), (PROPERTY_MAPS, "most active properties")):
            picture = directory / folder / f"{record['name']}.png"
            found.append(image(artifact_key("predict", folder, record["name"]), picture,
                               f"{record['name']}: {caption}"))
    return found
