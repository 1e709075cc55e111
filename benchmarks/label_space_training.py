"""label_space_training: does a property label space train a better model than one-hot classes?

Side by side, on the demo (its config's budget, K = 16) and on ../shared/data/camvid_mini (the
camvid config's budget, 400 iterations, K = 24; since issue 26 ``camvid`` is the Lite R-ASPP on the
packaged ImageNet EfficientNet-Lite0), each scored on the val split, for each training seed
(``randomness.seed``) and k-means seed 0:

- ``one-hot CE``: the config's one-hot twin (``demo_ce``, ``camvid_ce``);
- ``random``: a label space of random 384-d vectors, three a class, clustered into K (no text);
- ``gemma few-shot``: the embedded Gemma-3-270M with method.md's few-shot prompt, verify and
  repair off (the pipeline before issue 13);
- ``+ verify``, ``+ verify + repair``: the same descriptions verified, then repaired;
- ``gemma aspects (default)``: the embedded default path (aspects prompt, verify, repair);
- ``GPT-3.5``: the paper's Cityscapes descriptions mapped onto the same classes
  (shared/data/cityscapes_class_maps.json), verify and repair off;
- WaffleCLIP's controls: ``random words`` (as many lines a class as GPT-3.5's, of 2 to 4 words
  drawn at random from the GPT-3.5 files' vocabulary), ``swapped`` (each class takes all the lines
  of another class: a random derangement) and ``shuffled`` (GPT-3.5's lines dealt at random);
- ``... (cosine loss only)``: the same label space trained with the paper's loss alone; the
  ``demo`` and ``camvid`` configs add ``PropertyClassLoss`` (cross-entropy over the cosine class
  scores) beside it on the decode head, so the other rows train with both.
  (``... + class term`` asks for that pair on a config without it.)
- ``... @ K=N``: the row's label space clustered into N properties instead.

Per row: mIoU (mean ± std over the seeds, and each seed), the worst class's IoU, and the label
space's figures (collisions, near-collisions, the closest pair, subset pairs). The stages run in
this process through the store (``$PROLAB_ARTIFACTS``, default ``artifacts/``), so a rerun reuses
every finished training: run rows on separate cores, then all of them at once for the table.
``PROLAB_BENCH_DATASETS`` (``demo,camvid``), ``PROLAB_BENCH_ROWS`` (row names, comma-separated)
and ``PROLAB_BENCH_SEEDS`` (``"0 1 2"``; default 0) choose a subset. The last lines are
``camvid_pretrained_val_miou``, ``<dataset>_prolab_minus_ce`` (CamVid: GPT-3.5, the demo: the
embedded default, each against one-hot CE) and ``<dataset>_words_minus_random_words``, each the
mean over the seeds with the std of the per-seed differences.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("PROLAB_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DESCRIPTORS = SHARED / "data" / "prolab_descriptors"
CAMVID = SHARED / "data" / "camvid_mini"
SETTINGS = {"demo": {"config": "demo", "k": 16, "data_root": None},
            "camvid": {"config": "camvid", "k": 24, "data_root": CAMVID}}


def mapped_gpt35(dataset: str) -> dict[str, list[str]]:
    from label_space_quality import mapped_gpt35 as mapped

    return mapped(dataset)


def random_words(dataset: str, seed: int = 0) -> dict[str, list[str]]:
    """WaffleCLIP's random-word descriptors: GPT-3.5's line count a class, 2-4 random words a line."""
    vocabulary = sorted({word for path in DESCRIPTORS.glob("*.json") for texts in json.loads(path.read_text()).values()
                         for text in texts for word in re.findall(r"[a-z]{3,}", text.lower())})
    rng = random.Random(seed)
    return {name: [" ".join(rng.sample(vocabulary, rng.randint(2, 4))) for _ in texts]
            for name, texts in mapped_gpt35(dataset).items()}


def shuffled(dataset: str, seed: int = 0) -> dict[str, list[str]]:
    """GPT-3.5's lines dealt to the classes at random, each class keeping its number of lines."""
    descriptions = mapped_gpt35(dataset)
    lines = [text for texts in descriptions.values() for text in texts]
    random.Random(seed).shuffle(lines)
    out, start = {}, 0
    for name, texts in descriptions.items():
        out[name], start = lines[start:start + len(texts)], start + len(texts)
    return out


def swapped(dataset: str, seed: int = 0) -> dict[str, list[str]]:
    """WaffleCLIP's swapped control: each class takes all the GPT-3.5 lines of another class (a
    random derangement), so the lines keep their statistics and lose their correspondence."""
    descriptions = mapped_gpt35(dataset)
    names = list(descriptions)
    rng = random.Random(seed)
    while True:
        order = rng.sample(names, len(names))
        if all(a != b for a, b in zip(names, order)):
            return {name: descriptions[source] for name, source in zip(names, order)}


def random_label_space(directory: Path, classes: list[str], k: int, seed: int = 0) -> Path:
    """Random 384-d unit vectors, three a class, clustered into K as the cluster stage does."""
    import pandas as pd

    from tasks.label_space.cluster import cluster_embeddings, write_label_space

    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(3 * len(classes), 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    table = pd.DataFrame({"class_index": np.repeat(np.arange(len(classes)), 3),
                          "class_name": np.repeat(classes, 3), "description_index": np.tile(np.arange(3), len(classes)),
                          "text": [f"random {i}" for i in range(len(vectors))], "vector": list(vectors)})
    table["embedded_text"] = table["text"]
    directory.mkdir(parents=True, exist_ok=True)
    write_label_space(directory, cluster_embeddings(table, k, seed), "random", seed)
    return directory


def label_space_params(dataset: str, k: int, row: str, scratch: Path):
    """The label-space parameters of a row (None for the rows that bring their own label space)."""
    from tasks.params import (
        ClusterParams,
        DescribeParams,
        LabelSpaceParams,
        RepairParams,
        VerifyParams,
    )

    def imported(descriptions: dict[str, list[str]]) -> LabelSpaceParams:
        path = scratch / f"{dataset}-{row.replace(' ', '_')}.json"
        path.write_text(json.dumps(descriptions, indent=1))
        return LabelSpaceParams(describe=DescribeParams(dataset=dataset, descriptors=path), cluster=ClusterParams(k=k))

    def gemma(prompt: str, verify: bool, rounds: int) -> LabelSpaceParams:
        return LabelSpaceParams(describe=DescribeParams(dataset=dataset, llm="local", prompt=prompt),
                                verify=VerifyParams(enabled=verify), cluster=ClusterParams(k=k),
                                repair=RepairParams(rounds=rounds))

    rows: dict[str, Callable[[], LabelSpaceParams]] = {
        "gemma few-shot": lambda: gemma("few-shot", False, 0),
        "gemma few-shot + verify": lambda: gemma("few-shot", True, 0),
        "gemma few-shot + verify + repair": lambda: gemma("few-shot", True, 2),
        "gemma aspects (default)": lambda: LabelSpaceParams(describe=DescribeParams(dataset=dataset),
                                                            cluster=ClusterParams(k=k)),
        "GPT-3.5": lambda: imported(mapped_gpt35(dataset)),
        "random words": lambda: imported(random_words(dataset)),
        "shuffled": lambda: imported(shuffled(dataset)),
        "swapped": lambda: imported(swapped(dataset)),
        "one-hot CE": lambda: imported(mapped_gpt35(dataset)),  # the CE model ignores its label space
    }
    return rows[row]()


# The decode head's losses a row's suffix asks for, instead of its config's: the class term of
# issue 13, point 6 (PropertyClassLoss beside the cosine loss; the demo and camvid configs' own
# since it was measured), or the paper's cosine loss alone.
LOSS_VARIANTS = {
    " + class term": [dict(type="PropertyCosineLoss", loss_weight=1.0), dict(type="PropertyClassLoss", loss_weight=1.0)],
    " (cosine loss only)": [dict(type="PropertyCosineLoss", loss_weight=1.0)],  # a list: it replaces a list
}
ROWS = ("one-hot CE", "random", "gemma few-shot", "gemma few-shot + verify", "gemma few-shot + verify + repair",
        "gemma aspects (default)", "GPT-3.5", "random words", "shuffled", "swapped",
        "gemma aspects (default) (cosine loss only)", "GPT-3.5 (cosine loss only)")
K_SUFFIX = re.compile(r" @ K=(\d+)$")  # "GPT-3.5 @ K=15": the row's label space clustered into another K


def run_row(dataset: str, row: str, seed: int, store, scratch: Path) -> dict:
    from prolab_models.configs import one_hot_twin
    from tasks.datasets import dataset_classes
    from tasks.params import EndToEndParams, TrainParams
    from tasks.registry import LABEL_SPACE, LABEL_SPACE_STAGES, run_stages

    settings = SETTINGS[dataset]
    name = row
    k = settings["k"]
    if match := K_SUFFIX.search(row):
        row, k = row[:match.start()], int(match.group(1))
    config = one_hot_twin(settings["config"]) if row == "one-hot CE" else settings["config"]
    options: dict = {"randomness.seed": seed}
    variant = next((suffix for suffix in LOSS_VARIANTS if row.endswith(suffix)), "")
    if variant:
        row = row.removesuffix(variant)
        options["model.decode_head.loss_decode"] = LOSS_VARIANTS[variant]
    train = TrainParams(config=config, data_root=settings["data_root"], cfg_options=options)
    started = time.perf_counter()
    if row == "random":
        given = {LABEL_SPACE: random_label_space(scratch / f"{dataset}-random-{k}", dataset_classes(dataset), k)}
        params = EndToEndParams(train=train)
    else:
        params = EndToEndParams(label_space=label_space_params(dataset, k, row, scratch), train=train)
        given = {LABEL_SPACE: run_stages(params, store, LABEL_SPACE_STAGES)[LABEL_SPACE]}
    paths = run_stages(params, store, ["train", "evaluate"], given=given)
    metrics = json.loads((paths["evaluate"] / "metrics.json").read_text())
    quality = json.loads((given[LABEL_SPACE] / "quality.json").read_text())
    worst = min(metrics["per_class_iou"].items(), key=lambda item: -1 if item[1] is None else item[1])
    closest = quality.get("closest_pair") or {}
    return {"row": name, "seed": seed, "mIoU": metrics["mIoU"], "worst": worst, "per_class": metrics["per_class_iou"],
            "collisions": len(quality["collisions"]), "near": len(quality.get("near_collisions", [])),
            "closest": f"{'/'.join(closest.get('classes', []))} {closest.get('cosine', 0):.2f}/{closest.get('hamming')}",
            "subsets": len(quality.get("subsets", [])), "minutes": (time.perf_counter() - started) / 60,
            "label_space": str(given[LABEL_SPACE]), "evaluation": str(paths["evaluate"])}


def main() -> None:
    from tasks.store import ArtifactStore

    datasets = os.environ.get("PROLAB_BENCH_DATASETS", "demo,camvid").split(",")
    rows = os.environ.get("PROLAB_BENCH_ROWS", ",".join(ROWS)).split(",")
    seeds = [int(seed) for seed in os.environ.get("PROLAB_BENCH_SEEDS", os.environ.get("PROLAB_BENCH_SEED", "0")).split()]
    store = ArtifactStore()
    scratch = Path(tempfile.mkdtemp(prefix="prolab-label-space-training-"))
    results: dict[str, dict[str, list[dict]]] = {}
    for dataset in datasets:
        print(f"## {dataset} ({SETTINGS[dataset]['config']}, K={SETTINGS[dataset]['k']}, training seeds "
              f"{' '.join(map(str, seeds))}, val split)")
        print("| row | mIoU, mean ± std | each seed | worst class IoU | collisions | near-collisions | "
              "closest pair (cos/ham) | subsets |")
        print("|---|---|---|---|---|---|---|---|")
        for row in rows:
            runs = [run_row(dataset, row, seed, store, scratch) for seed in seeds]
            results.setdefault(dataset, {})[row] = runs
            mean, std = mean_std([r["mIoU"] for r in runs])
            worst = " / ".join(f"{r['worst'][0]} {r['worst'][1]}" for r in runs)
            first = runs[0]
            each = " / ".join(f"{r['mIoU']:.2f}" for r in runs)
            print(f"| {row} | {mean:.2f} ± {std:.2f} | {each} | "
                  f"{worst} | {first['collisions']} | {first['near']} | {first['closest']} | {first['subsets']} |",
                  flush=True)
        for row, runs in results[dataset].items():
            for r in runs:
                print(f"{dataset} {row} seed {r['seed']}: {json.dumps(r['per_class'])} ({r['minutes']:.1f} min; "
                      f"{r['evaluation']})")
    for dataset, rows_run in results.items():
        if dataset == "camvid" and "GPT-3.5" in rows_run:  # the pretrained camvid config's own figure
            mean, std = mean_std([r["mIoU"] for r in rows_run["GPT-3.5"]])
            print(f"camvid_pretrained_val_miou={mean:.2f} (std {std:.2f})")
        for name, row, against in (("prolab_minus_ce", "GPT-3.5" if dataset == "camvid" else "gemma aspects (default)",
                                    "one-hot CE"),
                                   ("words_minus_random_words", "GPT-3.5", "random words")):
            if row in rows_run and against in rows_run:
                mean, std = mean_std([a["mIoU"] - b["mIoU"] for a, b in zip(rows_run[row], rows_run[against])])
                print(f"{dataset}_{name}={mean:.2f} (std {std:.2f} over the seeds' paired differences)")


def mean_std(values: list[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (0 for one value)."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


if __name__ == "__main__":
    main()
