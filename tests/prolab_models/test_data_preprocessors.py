"""ChannelsLastSegDataPreProcessor: mmseg's batch, in channels-last order, which the CNN keeps."""

from __future__ import annotations

import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import prolab_models.register  # noqa: F401  (registers the modules)
from prolab_models.configs import CONFIGS, load_config
from prolab_models.data_preprocessors import ChannelsLastSegDataPreProcessor

SETTINGS = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True, size=(64, 64))


def batch(n: int = 2, size: tuple[int, int] = (60, 64)) -> dict:
    generator = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(n):
        sample = SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, 11, (1, *size), generator=generator)))
        sample.set_metainfo({"img_shape": size, "ori_shape": size})
        samples.append(sample)
    inputs = [torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=generator) for _ in range(n)]
    return {"inputs": inputs, "data_samples": samples}


@pytest.mark.parametrize("training", [True, False])
def test_same_batch_as_mmseg_s_in_channels_last_order(training: bool) -> None:
    ours = ChannelsLastSegDataPreProcessor(**SETTINGS)(batch(), training)
    theirs = SegDataPreProcessor(**SETTINGS)(batch(), training)
    assert ours["inputs"].is_contiguous(memory_format=torch.channels_last)
    assert not theirs["inputs"].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(ours["inputs"], theirs["inputs"])  # padded to 64x64 alike when training
    for mine, mmseg_s in zip(ours["data_samples"], theirs["data_samples"]):
        assert torch.equal(mine.gt_sem_seg.data, mmseg_s.gt_sem_seg.data)


def test_the_cnn_runs_in_channels_last_and_gives_the_same_loss() -> None:
    """What makes it pay: oneDNN's convolutions keep the input's order, so the backbone's
    features come out channels-last; the numbers are NCHW's up to the order of the sums."""
    cfg = load_config("camvid_ce")
    assert cfg.model.data_preprocessor.type == "ChannelsLastSegDataPreProcessor"
    init_default_scope("mmseg")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).train()
    data = model.data_preprocessor(batch(size=(64, 64)), True)
    features = model.extract_feat(data["inputs"])
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in features)
    torch.manual_seed(1)  # the same dropout masks
    ours = model.loss(data["inputs"], data["data_samples"])["decode.loss_ce"]
    torch.manual_seed(1)
    theirs = model.loss(data["inputs"].contiguous(), data["data_samples"])["decode.loss_ce"]
    assert abs(ours - theirs) <= 1e-3 * theirs, (ours.item(), theirs.item())


def test_every_cnn_cpu_config_uses_it() -> None:
    for name in CONFIGS:
        cfg = load_config(name)
        cnn = cfg.model.backbone.type.startswith("ResNet") or cfg.model.backbone.type == "TimmFeatures"
        if cnn and cfg.env_cfg.dist_cfg.backend == "gloo":
            assert cfg.model.data_preprocessor.type == "ChannelsLastSegDataPreProcessor", name
