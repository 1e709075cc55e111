"""Train-step time of the ResNet CPU configs with channels-last batches against NCHW ones.

The ResNet-18 DeepLabV3+ CPU configs hand their model channels-last batches
(``ChannelsLastSegDataPreProcessor``), so oneDNN runs every convolution in NHWC. Here each of
them (ProLab and one-hot; CamVid at strides 16 and 8, the demo at 16) is timed as shipped and
with mmseg's ``SegDataPreProcessor`` (NCHW), the two models' steps alternating from the same
weights on the same batch, with the label space of ``property_head``. ``camvid``'s pair (batch 6)
is also timed beside the ViT-Adapter-T twins it replaced as the CamVid default (batch 4), whose
step time is the budget issue 14 sets. Figures: median step times and the per-round ratios'
median and quartiles. ``PROLAB_BENCH_STEPS`` (10) sets the rounds.

    python benchmarks/run.py --only channels_last
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from mmengine.registry import init_default_scope
from property_head import PAIRS, STEPS, WARMUP, batch, build, sized_label_space

NCHW = {"model.data_preprocessor.type": "SegDataPreProcessor"}
# each group's models step in turn, each at its config's batch, on the first config's crop
GROUPS = {"camvid": ["camvid_ce", "camvid", "camvid_vit-adapter_ce", "camvid_vit-adapter"],
          "camvid_deeplabv3plus-d8": ["camvid_deeplabv3plus-d8_ce", "camvid_deeplabv3plus-d8"],
          "demo_deeplabv3plus": ["demo_deeplabv3plus_ce", "demo_deeplabv3plus"]}


def paired(numerator: list[float], denominator: list[float]) -> str:
    quartiles = statistics.quantiles([n / d for n, d in zip(numerator, denominator)], n=4)
    return f"{statistics.median(numerator) / statistics.median(denominator):.3f} " \
           f"(per round: median {quartiles[1]:.3f}, quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f})"


def main() -> None:
    init_default_scope("mmseg")
    print(f"threads={torch.get_num_threads()} steps={STEPS} (after {WARMUP} warm-up)")
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        for group, configs in GROUPS.items():
            space = sized_label_space(Path(tmp) / group, PAIRS[group])
            models = {}
            for config in configs:
                models[config] = build(config, space)
                if "vit-adapter" not in config:
                    models[f"{config} NCHW"] = build(config, space, overrides=NCHW)
            crop = tuple(models[configs[0]][2].crop_size)
            times: dict[str, list[float]] = {name: [] for name in models}
            for step in range(WARMUP + STEPS):
                for name, (model, optim_wrapper, model_cfg) in models.items():
                    data = batch(model_cfg.train_dataloader.batch_size, crop, PAIRS[group],
                                 torch.Generator().manual_seed(step))
                    start = time.perf_counter()
                    model.train_step(data, optim_wrapper)
                    if step >= WARMUP:
                        times[name].append(time.perf_counter() - start)
            print(f"{group} (crop {crop}):")
            for name, t in times.items():
                print(f"  {name} (batch {models[name][2].train_dataloader.batch_size}): "
                      f"median {statistics.median(t):.3f} s/step, min {min(t):.3f}, max {max(t):.3f}")
            for config in configs:
                if "vit-adapter" not in config:
                    ratios[config] = statistics.median(times[config]) / statistics.median(times[f"{config} NCHW"])
                    print(f"  channels_last_step_ratio[{config}]={paired(times[config], times[f'{config} NCHW'])}")
            for config in configs:
                if "vit-adapter" in config:
                    resnet = config.replace("_vit-adapter", "")
                    print(f"  {resnet} / {config}: channels-last {paired(times[resnet], times[config])}, "
                          f"NCHW {paired(times[f'{resnet} NCHW'], times[config])}")
    print(f"largest: {max(ratios, key=ratios.get)}")
    print(f"channels_last_step_ratio={max(ratios.values()):.3f}")


if __name__ == "__main__":
    main()
