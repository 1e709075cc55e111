"""Train-step time of ProLab's property heads against the one-hot (cross-entropy) heads.

Both models are the CamVid CPU configs' (ViT-Adapter-T, UPerNet + FCN auxiliary head, the
config's batch and crop size); only the heads and losses differ. The label space is CamVid-sized: 11
classes, K=32 properties of 384-d (MiniLM) centres. Steps of the two models alternate so that
load on a shared machine hits both alike; the figure is the ratio of median step times.

    python benchmarks/run.py --only property_head
"""

from __future__ import annotations

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

CAMVID_CLASSES = [f"class {i}" for i in range(11)]
WARMUP, STEPS = 2, 10


def camvid_sized_label_space(directory: Path) -> Path:
    """The cluster stage run on random unit vectors: 10 descriptions a class, 384-d, K=32."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(CAMVID_CLASSES) * 10, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    table = pd.DataFrame({
        "class_index": np.repeat(np.arange(len(CAMVID_CLASSES)), 10),
        "class_name": np.repeat(CAMVID_CLASSES, 10),
        "description_index": np.tile(np.arange(10), len(CAMVID_CLASSES)),
        "text": [f"description {i}" for i in range(len(vectors))],
        "vector": list(vectors),
    })
    directory.mkdir(parents=True)
    write_label_space(directory, cluster_embeddings(table, k=32, seed=0), embedder="random", seed=0)
    return directory


def build(config: str, label_space: Path) -> tuple[torch.nn.Module, object, Config]:
    cfg = Config.fromfile(resolve_config(config))
    for head in (cfg.model.decode_head, cfg.model.auxiliary_head):
        if "label_space" in head:
            head.label_space = str(label_space)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).train()
    return model, build_optim_wrapper(model, cfg.optim_wrapper), cfg


def batch(size: int, crop: tuple[int, int], generator: torch.Generator) -> dict:
    """Random images and labels of a training batch, as the dataloader would give them."""
    inputs = [torch.randint(0, 256, (3, *crop), dtype=torch.uint8, generator=generator) for _ in range(size)]
    samples = []
    for _ in range(size):
        label = torch.randint(0, len(CAMVID_CLASSES), (1, *crop), generator=generator)
        sample = SegDataSample(gt_sem_seg=PixelData(data=label))
        sample.set_metainfo(dict(img_shape=crop, pad_shape=crop, ori_shape=crop))
        samples.append(sample)
    return {"inputs": inputs, "data_samples": samples}


def main() -> None:
    init_default_scope("mmseg")
    with tempfile.TemporaryDirectory() as tmp:
        space = camvid_sized_label_space(Path(tmp) / "ls")
        models = {"property": build("camvid", space), "ce": build("camvid_ce", space)}
        cfg = models["property"][2]
        size, crop = cfg.train_dataloader.batch_size, tuple(cfg.crop_size)
        data = batch(size, crop, torch.Generator().manual_seed(0))
        times: dict[str, list[float]] = {name: [] for name in models}
        for step in range(WARMUP + STEPS):
            for name, (model, optim_wrapper, _) in models.items():
                start = time.perf_counter()
                model.train_step(data, optim_wrapper)
                if step >= WARMUP:
                    times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"threads={torch.get_num_threads()} batch={size} crop={crop} steps={STEPS} (after {WARMUP} warm-up)")
    for name, t in times.items():
        print(f"{name}: median {medians[name]:.3f} s/step, min {min(t):.3f}, max {max(t):.3f}")
    print(f"property_head_step_ratio={medians['property'] / medians['ce']:.3f}")


if __name__ == "__main__":
    main()
