"""PreciseBN, the layer-decay optimizer constructor, and weights-only checkpoint loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from torch import nn

import prolab_models.register  # noqa: F401  (registers the modules)
from prolab_models.backbones import ViTAdapter
from prolab_models.engine import PreciseBNHook


class BNNet(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(3, momentum=0.1)

    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = "tensor") -> torch.Tensor:
        return self.bn(inputs)


def test_precise_bn_sets_the_exact_statistics_of_the_batches() -> None:
    model = BNNet().train()
    batches = [{"inputs": torch.randn(8, 3) * 2 + 5} for _ in range(4)]
    model.bn.running_mean.fill_(100.0)  # stale statistics, as after a short run
    PreciseBNHook(num_batches=4).recompute(model, iter(batches))
    data = torch.cat([b["inputs"] for b in batches])
    assert torch.allclose(model.bn.running_mean, data.mean(0), atol=1e-5)
    batch_vars = torch.stack([b["inputs"].var(0, unbiased=True) for b in batches])
    assert torch.allclose(model.bn.running_var, batch_vars.mean(0), atol=1e-5)
    assert model.bn.momentum == 0.1


class Segmentor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = ViTAdapter(arch="tiny", embed_dim=48, depth=3, interaction_indexes=[[0, 2]],
                                   norm_cfg=dict(type="BN"))
        self.decode_head = nn.Conv2d(48, 2, 1)


def test_layer_decay_scales_lr_by_depth() -> None:
    init_default_scope("mmseg")  # the constructor is registered in mmseg's registry
    model = Segmentor()
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type="AdamW", lr=1.0, weight_decay=0.01),
        constructor="ViTAdapterLayerDecayOptimizerConstructor",
        paramwise_cfg=dict(num_layers=3, layer_decay_rate=0.5)))
    params = {id(p): g for g in wrapper.optimizer.param_groups for p in g["params"]}
    group = {name: params[id(p)] for name, p in model.named_parameters()}
    assert group["backbone.patch_embed.proj.weight"]["lr"] == 0.5**4
    assert group["backbone.blocks.0.attn.qkv.weight"]["lr"] == 0.5**3
    assert group["backbone.blocks.2.attn.qkv.weight"]["lr"] == 0.5
    assert group["backbone.spm.fc1.weight"]["lr"] == 1.0
    assert group["decode_head.weight"]["lr"] == 1.0
    assert group["decode_head.weight"]["weight_decay"] == 0.01
    assert group["decode_head.bias"]["weight_decay"] == 0.0
    assert group["backbone.level_embed"]["weight_decay"] == 0.0


def test_mmengine_metadata_loads_with_weights_only(tmp_path: Path) -> None:
    buffer = HistoryBuffer()
    buffer.update(0.5)
    path = tmp_path / "ckpt.pth"
    torch.save({"message_hub": {"loss": buffer, "eta": np.float64(3.0)}, "w": torch.ones(2)}, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["message_hub"]["loss"].current() == 0.5
    assert loaded["message_hub"]["eta"] == 3.0


def test_other_globals_stay_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"f": getattr}, path)
    with pytest.raises(Exception, match="getattr"):
        torch.load(path, weights_only=True)
