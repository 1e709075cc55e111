"""transfer: classes never trained on, scored from their descriptions (zero-shot segmentation's protocol).

Label spaces: the paper's GPT-3.5 Cityscapes descriptions mapped onto the demo's and CamVid's
classes (``shared/data/cityscapes_class_maps.json``; ``label_space_quality.mapped_gpt35``),
imported (no verify, no repair), embedded with all-MiniLM-L6-v2 and clustered with the K of
label_space_quality (demo 16, CamVid 24), seed 0. Models: the shipped configs at their budgets
(``demo``: ViT-Adapter-T, 300 iterations on the generated demo, scored on its test split;
``camvid``: a ResNet-18-D16 DeepLabV3+, 400 iterations on ``shared/data/camvid_mini``, scored
on its val split).

Per experiment: the model trained with the held-out classes' pixels ignored and their
descriptions out of the label space, evaluated with them added back from their descriptions
(mIoU over the seen classes, the unseen ones, hIoU = 2SU/(S+U)); the two controls (each unseen
class with another class's descriptions, and with random-word descriptors); and the same model
trained without holding out, whose mIoU over the same seen classes says what holding out costs.
Experiments: demo holding out ``person``, demo holding out ``car``, CamVid holding out
``bicyclist`` and ``sign symbol``.

Then predict against evaluate on the same images: the CamVid run trained on every class,
``prolab evaluate``'s own seconds per image (its test loop) and ``predict``'s (decode,
inference, label map, overlay and property maps), on camvid_mini's 21 val images at 360x480,
on the CPU, measured twice in turn.

``python benchmarks/transfer.py --plan`` only plans every experiment (a bad class name or option
fails there, before any training) and exits.

Runs go through the stage registry in this process, into the default store
(``$PROLAB_ARTIFACTS`` or ``artifacts/``), so a rerun reuses the trainings (a few minutes each
on 2 cores) and ``prolab predict --checkpoint`` can read them afterwards.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from label_space_quality import K, SHARED, mapped_gpt35  # noqa: E402

CAMVID_MINI = SHARED / "data" / "camvid_mini"
EXPERIMENTS = (
    ("demo", "demo", None, "test", ["person"]),
    ("demo", "demo", None, "test", ["car"]),
    ("camvid", "camvid", CAMVID_MINI, "val", ["bicyclist", "sign symbol"]),
)


def params_for(dataset: str, config: str, data_root: Path | None, split: str, held_out: list[str],
               descriptors: Path):
    from tasks.params import EndToEndParams

    # The seed option spelt as label_space_training and cpu_recipes spell it: a run trained on
    # every class is then their "GPT-3.5" row, found in the store.
    train = {"config": config, "held_out": held_out, "cfg_options": {"randomness.seed": 0}}
    if data_root is not None:
        train["data_root"] = str(data_root)
    return EndToEndParams.model_validate({
        "label_space": {"describe": {"dataset": dataset, "descriptors": str(descriptors)},
                        "cluster": {"k": K[dataset], "seed": 0}},
        "train": train,
        "evaluate": {"split": split},
    })


def run(params, store) -> dict:
    from tasks.registry import STAGES, run_stages

    started = time.perf_counter()
    paths = run_stages(params, store, [s.name for s in STAGES if s.name != "predict"])
    print(f"  ({time.perf_counter() - started:.0f} s; run {paths['train']}, evaluation {paths['evaluate']})",
          flush=True)
    return json.loads((paths["evaluate"] / "metrics.json").read_text()) | {"_run": str(paths["train"])}


def fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def throughput(run_dir: Path, label_space: Path) -> tuple[list[float], list[float]]:
    """Seconds per image of evaluate's test loop and of predict, on camvid_mini's val images, twice in turn."""
    from tasks.model.evaluate import evaluate
    from tasks.model.predict import predict

    images = sorted((CAMVID_MINI / "val").glob("*.png"))
    evaluations, predictions = [], []
    for _ in range(2):
        with tempfile.TemporaryDirectory() as tmp:
            evaluations.append(evaluate("camvid", label_space, run_dir, Path(tmp) / "eval", CAMVID_MINI, "val",
                                        num_pictures=0)["seconds_per_image"])
            predictions.append(predict(run_dir, images, Path(tmp) / "predict", "camvid").seconds_per_image)
    return evaluations, predictions


def plan_all(tmp: Path) -> list[tuple]:
    """Every experiment's parameters, planned (cheap): a bad class or option fails before any training."""
    from tasks.registry import STAGES, plan_stages

    planned = []
    for dataset, config, data_root, split, held_out in EXPERIMENTS:
        descriptors = tmp / f"{dataset}_gpt35.json"
        descriptors.write_text(json.dumps(mapped_gpt35(dataset), indent=1))
        both = [params_for(dataset, config, data_root, split, classes, descriptors) for classes in (held_out, [])]
        for params in both:
            plan_stages(params, [s.name for s in STAGES if s.name != "predict"])
        planned.append((dataset, held_out, *both))
    return planned


def main() -> None:
    from tasks.store import ArtifactStore

    store = ArtifactStore()
    print(f"store: {store.location}; load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        planned = plan_all(Path(tmp))
        if "--plan" in sys.argv[1:]:
            print(f"planned {len(planned)} experiments; nothing run")
            return
        for dataset, held_out, held_out_params, full_params in planned:
            print(f"{dataset}, holding out {', '.join(held_out)}:", flush=True)
            zero_shot = run(held_out_params, store)
            print(f"{dataset}, trained on every class:", flush=True)
            full = run(full_params, store)
            from tasks.model.evaluate import transfer_metrics

            supervised = transfer_metrics(full["per_class_iou"], held_out)
            rows.append((dataset, held_out, zero_shot, full, supervised))
            if dataset == "camvid":
                camvid_full = full
    print()
    print("| dataset | held out | seen mIoU | unseen mIoU | hIoU | swapped: unseen / hIoU | random words: unseen / hIoU "
          "| trained on all: seen mIoU / unseen mIoU |")
    print("|---|---|---|---|---|---|---|---|")
    for dataset, held_out, zero_shot, full, supervised in rows:
        swapped, random_words = zero_shot["controls"]["swapped"], zero_shot["controls"]["random_words"]
        print(f"| {dataset} | {', '.join(held_out)} | {fmt(zero_shot['mIoU_seen'])} | {fmt(zero_shot['mIoU_unseen'])} "
              f"| {fmt(zero_shot['hIoU'])} | {fmt(swapped['mIoU_unseen'])} / {fmt(swapped['hIoU'])} "
              f"| {fmt(random_words['mIoU_unseen'])} / {fmt(random_words['hIoU'])} "
              f"| {fmt(supervised['mIoU_seen'])} / {fmt(supervised['mIoU_unseen'])} |")
    for dataset, held_out, zero_shot, _, _ in rows:
        print(f"{dataset} {'+'.join(held_out)}: per unseen class {zero_shot['per_class_iou']} "
              f"(own) / {zero_shot['controls']['swapped']['per_class_iou']} (descriptions of "
              f"{zero_shot['controls']['swapped']['descriptions_of']}) / "
              f"{zero_shot['controls']['random_words']['per_class_iou']} (random words, unexpressed lines "
              f"{zero_shot['controls']['random_words']['unexpressed_descriptions']}); "
              f"unseen properties {zero_shot['unseen_properties']}")
    from tasks.model.runs import run_record

    camvid_run = Path(camvid_full["_run"])
    evaluations, predictions = throughput(camvid_run, run_record(camvid_run).label_space)
    ratio = min(predictions) / min(evaluations)
    print(f"camvid_mini val (21 images, 360x480), CPU, seconds per image: evaluate "
          f"{', '.join(f'{s:.3f}' for s in evaluations)}; predict {', '.join(f'{s:.3f}' for s in predictions)}; "
          f"predict_over_evaluate={ratio:.3f} (best of each; goal <= 1.1)")
    demo_person = rows[0][2]
    print(f"demo_unseen_miou={fmt(demo_person['mIoU_unseen'])}")


if __name__ == "__main__":
    main()
