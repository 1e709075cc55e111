"""Train-step time of ProLab's property heads against the one-hot (cross-entropy) heads.

For each CPU config and its one-hot twin (the config's model, batch and crop size; only the heads
and losses differ): the ViT-Adapter-T UPerNet + FCN on CamVid and on the demo data, the ResNet-18
DeepLabV3+ (separable ASPP + FCN) at strides 16 and 8 on CamVid and at 16 on the demo data. The
label space has the dataset's classes and K=32 properties of 384-d (MiniLM) centres. Steps of the
models of a pair alternate (a round is one step of each) so that load on a shared machine hits
them alike; the figure is the ratio of median step times, one per pair, and the last line the
largest. Beside it, the median and quartiles of the per-round ratios: a paired figure, which slow
drifts in the machine's speed do not move. ``PROLAB_BENCH_STEPS`` (10) sets the rounds timed and
``PROLAB_BENCH_PAIRS`` (config names, comma-separated) a subset of the pairs. The ProLab model is
timed with the paper's cosine loss alone and with issue 13's class term (``PropertyClassLoss``)
beside it; a pair's ratio is the one of its config's own losses, and both are printed.

    python benchmarks/run.py --only property_head
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from prolab_models.configs import resolve_config
from tasks.label_space.cluster import cluster_embeddings, write_label_space

# The decode head's losses, timed both ways whatever the config says: the paper's cosine loss alone,
# and with issue 13's class term beside it (the demo and camvid configs' own)
LOSSES = {"cosine": dict(type="PropertyCosineLoss", loss_weight=1.0),
          "cosine + class term": [dict(type="PropertyCosineLoss", loss_weight=1.0),
                                  dict(type="PropertyClassLoss", loss_weight=1.0)]}
# ProLab config -> its dataset's number of classes; its twin is "<name>_ce"
PAIRS = {"camvid_vit-adapter": 11, "camvid": 11, "camvid_deeplabv3plus-d8": 11, "demo": 7, "demo_deeplabv3plus": 7}
WARMUP, STEPS = 2, int(os.environ.get("PROLAB_BENCH_STEPS", "10"))


def sized_label_space(directory: Path, num_classes: int) -> Path:
    """The cluster stage run on random unit vectors: 10 descriptions a class, 384-d, K=32."""
    classes = [f"class {i}" for i in range(num_classes)]
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(num_classes * 10, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    table = pd.DataFrame({
        "class_index": np.repeat(np.arange(num_classes), 10),
        "class_name": np.repeat(classes, 10),
        "description_index": np.tile(np.arange(10), num_classes),
        "text": [f"description {i}" for i in range(len(vectors))],
        "vector": list(vectors),
    })
    directory.mkdir(parents=True)
    write_label_space(directory, cluster_embeddings(table, k=32, seed=0), embedder="random", seed=0)
    return directory


def build(config: str, label_space: Path, losses: str | None = None,
          overrides: dict | None = None) -> tuple[torch.nn.Module, object, Config]:
    """``config``'s model (seed 0) and optimiser, its heads on ``label_space``; ``losses``: an
    entry of ``LOSSES`` for the decode head; ``overrides``: as ``--cfg-options``."""
    cfg = Config.fromfile(resolve_config(config))
    if overrides:
        cfg.merge_from_dict(overrides)
    for head in (cfg.model.decode_head, cfg.model.auxiliary_head):
        if "label_space" in head:
            head.label_space = str(label_space)
    if losses is not None:
        cfg.model.decode_head.loss_decode = LOSSES[losses]
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).train()
    return model, build_optim_wrapper(model, cfg.optim_wrapper), cfg


def batch(size: int, crop: tuple[int, int], num_classes: int, generator: torch.Generator) -> dict:
    """Random images and labels of a training batch, as the dataloader would give them."""
    inputs = [torch.randint(0, 256, (3, *crop), dtype=torch.uint8, generator=generator) for _ in range(size)]
    samples = []
    for _ in range(size):
        label = torch.randint(0, num_classes, (1, *crop), generator=generator)
        sample = SegDataSample(gt_sem_seg=PixelData(data=label))
        sample.set_metainfo(dict(img_shape=crop, pad_shape=crop, ori_shape=crop))
        samples.append(sample)
    return {"inputs": inputs, "data_samples": samples}


def step_times(config: str, num_classes: int, directory: Path) -> tuple[dict[str, list[float]], int, tuple]:
    """Seconds per train step of ``config``'s one-hot twin (``ce``) and of ``config`` with each of
    ``LOSSES``, their steps alternating."""
    space = sized_label_space(directory / config, num_classes)
    models = {"ce": build(f"{config}_ce", space), **{losses: build(config, space, losses) for losses in LOSSES}}
    cfg = models["ce"][2]
    size, crop = cfg.train_dataloader.batch_size, tuple(cfg.crop_size)
    data = batch(size, crop, num_classes, torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {name: [] for name in models}
    for step in range(WARMUP + STEPS):
        for name, (model, optim_wrapper, _) in models.items():
            start = time.perf_counter()
            model.train_step(data, optim_wrapper)
            if step >= WARMUP:
                times[name].append(time.perf_counter() - start)
    return times, size, crop


def shipped_losses(config: str) -> str:
    """The entry of ``LOSSES`` that ``config`` itself trains with."""
    loss_decode = Config.fromfile(resolve_config(config)).model.decode_head.loss_decode
    return "cosine + class term" if isinstance(loss_decode, list) else "cosine"


def main() -> None:
    init_default_scope("mmseg")
    print(f"threads={torch.get_num_threads()} steps={STEPS} (after {WARMUP} warm-up)")
    ratios = {}
    chosen = os.environ.get("PROLAB_BENCH_PAIRS")
    pairs = {name: PAIRS.get(name) for name in chosen.split(",")} if chosen else PAIRS
    if None in pairs.values():
        raise SystemExit(f"PROLAB_BENCH_PAIRS={chosen!r}: the pairs are {', '.join(PAIRS)}")
    with tempfile.TemporaryDirectory() as tmp:
        for config, num_classes in pairs.items():
            times, size, crop = step_times(config, num_classes, Path(tmp))
            medians = {name: statistics.median(t) for name, t in times.items()}
            print(f"{config} (batch {size}, crop {crop}):")
            for name, t in times.items():
                print(f"  {name}: median {medians[name]:.3f} s/step, min {min(t):.3f}, max {max(t):.3f}")
            shipped = shipped_losses(config)
            for losses in LOSSES:
                paired = statistics.quantiles([t / c for t, c in zip(times[losses], times["ce"])], n=4)
                print(f"  {losses}{' (the config)' if losses == shipped else ''} / ce: "
                      f"{medians[losses] / medians['ce']:.3f} (per round: median {paired[1]:.3f}, "
                      f"quartiles {paired[0]:.3f}-{paired[2]:.3f})")
            ratios[config] = medians[shipped] / medians["ce"]
            print(f"  property_head_step_ratio[{config}]={ratios[config]:.3f}", flush=True)
    print(f"largest: {max(ratios, key=ratios.get)}")
    print(f"property_head_step_ratio={max(ratios.values()):.3f}")


if __name__ == "__main__":
    main()
