"""The ViT-Adapter backbone: pyramid shapes, gradients, construction by name, pretrained loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmseg.registry import MODELS
from timm.models.vision_transformer import VisionTransformer

import prolab_models.register  # noqa: F401  (registers the modules)
from prolab_models.backbones import ViTAdapter, vit_adapter_tiny

TINY = dict(arch="tiny", embed_dim=48, depth=2, interaction_indexes=[[0, 0], [1, 1]], norm_cfg=dict(type="BN"))


def test_outputs_a_four_level_pyramid_at_strides_4_to_32() -> None:
    model = ViTAdapter(**TINY)
    outs = model(torch.randn(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, 48, 16, 24), (2, 48, 8, 12), (2, 48, 4, 6), (2, 48, 2, 3)]


def test_every_parameter_gets_a_gradient() -> None:
    model = ViTAdapter(**TINY, init_values=0.1)
    sum(o.square().mean() for o in model(torch.randn(2, 3, 64, 64))).backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused
    assert model.interactions[0].injector.attn.sampling_offsets.weight.grad.abs().sum() > 0


def test_four_interaction_blocks_with_extra_extractors() -> None:
    model = ViTAdapter(arch="tiny", embed_dim=48, depth=4, interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]],
                       norm_cfg=dict(type="BN"))
    assert [len(b.extractors) for b in model.interactions] == [1, 1, 1, 3]
    assert len(model(torch.randn(1, 3, 64, 64))) == 4


def test_constructors_by_name_use_the_published_sizes() -> None:
    tiny = MODELS.build(dict(type="vit_adapter_tiny", norm_cfg=dict(type="BN")))
    assert isinstance(tiny, ViTAdapter)
    assert tiny.pos_embed.shape[-1] == 192 and len(tiny.blocks) == 12 and len(tiny.interactions) == 4
    assert vit_adapter_tiny.__name__ == "vit_adapter_tiny"
    with pytest.raises(ValueError, match="unknown arch 'huge'"):
        ViTAdapter(arch="huge")


def test_input_not_a_multiple_of_32_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\(50, 64\) is not a multiple of 32"):
        ViTAdapter(**TINY)(torch.randn(1, 3, 50, 64))


def test_pretrained_vit_weights_load_from_a_file(tmp_path: Path) -> None:
    vit = VisionTransformer(img_size=224, patch_size=16, embed_dim=48, depth=2, num_heads=3, num_classes=0)
    path = tmp_path / "vit.pth"
    torch.save({"model": vit.state_dict()}, path)
    model = ViTAdapter(**TINY, pretrained=str(path))
    model.init_weights()
    assert torch.equal(model.blocks[1].mlp.fc2.weight, vit.blocks[1].mlp.fc2.weight)
    assert torch.equal(model.pos_embed, vit.pos_embed)


def test_pretrained_that_is_neither_file_nor_timm_name_fails() -> None:
    with pytest.raises(ValueError, match="a file, nor a timm model name"):
        ViTAdapter(**TINY, pretrained="no_such_model").init_weights()
