"""cpu_recipes: the CPU configs at their budget, each beside its one-hot twin, on camvid_mini and the demo.

Every config trains with its own schedule (CamVid 400 iterations, demo 300; ``camvid`` from its
packaged ImageNet EfficientNet-Lite0, the others from scratch) and is scored on the val split: mIoU, the worst class's IoU, seconds per iteration (the median of
mmengine's logged iteration times) and the training's wall time, per training seed
(``randomness.seed``). The stages run in this process through the store (``$PROLAB_ARTIFACTS``,
default ``artifacts/``; ``tasks.registry.run_stages``), so a stopped sweep started again reuses
every finished training (its wall time is then not measured again: ``-`` in the table).

The ProLab runs use the paper's GPT-3.5 Cityscapes descriptions mapped onto each dataset's classes
(``../shared/data/cityscapes_class_maps.json``), embedded with all-MiniLM-L6-v2 and clustered with the
K of label_space_quality (demo 16, CamVid 24; k-means seed 0), the defaults of an import otherwise;
the one-hot twins ignore it. These are the label space and seed option of label_space_training's
"GPT-3.5" and "one-hot CE" rows and of transfer's "trained on all" runs, so a training any of them
has done is found in the store, not repeated.

    python benchmarks/run.py --only cpu_recipes
    PROLAB_BENCH_SEEDS="0 1" PROLAB_BENCH_RUNS=camvid,camvid_ce python benchmarks/run.py --only cpu_recipes
    PROLAB_BENCH_RUNS="demo_deeplabv3plus + class term" python benchmarks/run.py --only cpu_recipes
    PROLAB_BENCH_BATCH=8 PROLAB_BENCH_RUNS=camvid,camvid_ce python benchmarks/run.py --only cpu_recipes

``PROLAB_BENCH_BATCH`` trains every chosen run at that batch size instead of its config's (a run
named ``<config> @ batch N``): a model at another config's time per iteration.

The last line is ``camvid_best_cpu_miou=<value>``: the best CamVid mIoU of a CPU config (mean
over its seeds).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

SHARED = Path(os.environ.get("PROLAB_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CAMVID = SHARED / "data" / "camvid_mini"
BATCH = int(os.environ.get("PROLAB_BENCH_BATCH", "0"))

# dataset -> (data root, None for the generated demo; short names of its CPU configs, each
# ProLab config beside its one-hot twin)
CONFIGS: dict[str, tuple[Path | None, list[str]]] = {
    "camvid": (CAMVID, ["camvid", "camvid_ce", "camvid_deeplabv3plus-d16", "camvid_deeplabv3plus-d16_ce",
                        "camvid_deeplabv3plus-d8", "camvid_deeplabv3plus-d8_ce",
                        "camvid_vit-adapter", "camvid_vit-adapter_ce"]),
    "demo": (None, ["demo_deeplabv3plus", "demo_deeplabv3plus_ce", "demo", "demo_ce"]),
}


def label_space_params(dataset: str, scratch: Path):
    """GPT-3.5's descriptions of ``dataset``'s classes, imported, with label_space_quality's K."""
    from label_space_quality import K, mapped_gpt35

    from tasks.params import ClusterParams, DescribeParams, LabelSpaceParams

    path = scratch / f"{dataset}_cityscapes_gpt3.5.json"
    path.write_text(json.dumps(mapped_gpt35(dataset), indent=1))
    return LabelSpaceParams(describe=DescribeParams(dataset=dataset, descriptors=path),
                            cluster=ClusterParams(k=K[dataset], seed=0))


def _iteration_seconds(run: Path) -> float:
    """The median of mmengine's logged per-iteration times (training iterations only)."""
    records = [json.loads(line) for path in sorted(run.glob("*/vis_data/scalars.json"))
               for line in path.read_text().splitlines() if line.strip()]
    return statistics.median(r["time"] for r in records if "time" in r and any("loss" in key for key in r))


def split_variant(name: str) -> tuple[str, str]:
    """(config, loss suffix) of a run name: ``demo_deeplabv3plus + class term`` is that config
    with one of label_space_training's decode-head loss variants; a plain name has suffix ''."""
    from label_space_training import LOSS_VARIANTS

    suffix = next((suffix for suffix in LOSS_VARIANTS if name.endswith(suffix)), "")
    return name.removesuffix(suffix), suffix


def run_one(config: str, data_root: Path | None, seed: int, space: Path, labels, store) -> dict:
    """Train and evaluate the run ``config`` (a config or a variant, ``split_variant``) with
    training seed ``seed`` (found in the store if done before)."""
    from label_space_training import LOSS_VARIANTS

    from tasks.params import EndToEndParams, TrainParams
    from tasks.registry import LABEL_SPACE, plan_stages, run_stages

    options: dict = {"randomness.seed": seed}
    if BATCH:
        options["train_dataloader.batch_size"] = BATCH
    name, suffix = split_variant(config)
    if suffix:
        options["model.decode_head.loss_decode"] = LOSS_VARIANTS[suffix]
    train = TrainParams(config=name, data_root=data_root, cfg_options=options)
    params = EndToEndParams(label_space=labels, train=train)
    given = {LABEL_SPACE: space}
    reused = store.get("train", plan_stages(params, ["train"], given=given)["train"].key) is not None
    started = time.perf_counter()
    paths = run_stages(params, store, ["train"], given=given)
    seconds = None if reused else round(time.perf_counter() - started, 1)
    paths = run_stages(params, store, ["train", "evaluate"], given=given)  # the training: found in the store
    metrics = json.loads((paths["evaluate"] / "metrics.json").read_text())
    ious = {name: iou for name, iou in metrics["per_class_iou"].items() if iou is not None}
    worst = min(ious, key=ious.get)
    return {"config": f"{config} @ batch {BATCH}" if BATCH else config, "seed": seed, "mIoU": metrics["mIoU"],
            "worst_class": worst, "worst_iou": ious[worst],
            "s_per_it": round(_iteration_seconds(paths["train"]), 3), "train_seconds": seconds,
            "per_class_iou": metrics["per_class_iou"], "evaluation": str(paths["evaluate"])}


def main() -> None:
    from tasks.params import EndToEndParams
    from tasks.registry import LABEL_SPACE, LABEL_SPACE_STAGES, run_stages
    from tasks.store import ArtifactStore

    seeds = [int(s) for s in os.environ.get("PROLAB_BENCH_SEEDS", "0").split()]
    wanted = set(filter(None, os.environ.get("PROLAB_BENCH_RUNS", "").split(",")))
    store = ArtifactStore()
    scratch = Path(tempfile.mkdtemp(prefix="prolab-cpu-recipes-"))
    results: dict[str, list[dict]] = {}
    for dataset, (data_root, configs) in CONFIGS.items():
        variants = [name for name in sorted(wanted) if name not in configs and split_variant(name)[0] in configs]
        chosen = [config for config in configs if not wanted or config in wanted] + variants
        if not chosen:
            continue
        labels = label_space_params(dataset, scratch)
        space = run_stages(EndToEndParams(label_space=labels), store, LABEL_SPACE_STAGES)[LABEL_SPACE]
        for seed in seeds:
            for config in chosen:
                record = run_one(config, data_root, seed, space, labels, store)
                results.setdefault(dataset, []).append(record)
                print(json.dumps({k: v for k, v in record.items() if k != "per_class_iou"}), flush=True)
    report(results)


def report(results: dict[str, list[dict]]) -> None:
    print("| dataset | config | seeds | mIoU (each seed) | worst class IoU | s/it | train s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    best: dict[str, float] = {}
    for dataset, records in results.items():
        for config in dict.fromkeys(r["config"] for r in records):
            runs = sorted((r for r in records if r["config"] == config), key=lambda r: r["seed"])
            mean = statistics.mean(r["mIoU"] for r in runs)
            if dataset == "camvid":
                best[config] = mean
            each = {
                "mIoU": " / ".join(f"{r['mIoU']:.2f}" for r in runs),
                "worst": " / ".join(f"{r['worst_class']} {r['worst_iou']:.1f}" for r in runs),
                "s_per_it": " / ".join(f"{r['s_per_it']:.2f}" for r in runs),
                "train": " / ".join("-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}" for r in runs),
            }
            print(f"| {dataset} | `{config}` | {' '.join(str(r['seed']) for r in runs)} | {mean:.2f} ({each['mIoU']}) "
                  f"| {each['worst']} | {each['s_per_it']} | {each['train']} |")
    if best:
        print(f"camvid_best_cpu_miou={max(best.values()):.2f}")


if __name__ == "__main__":
    main()
