"""Layer-wise learning-rate decay for ViT-Adapter (BEiT's recipe, used by ViT-Adapter and ProLab).

ViT block i (0-based) of L gets lr x decay^(L - i); the patch and position embeddings
lr x decay^(L + 1); everything else (adapter, heads) the full lr. mmseg's
``LearningRateDecayOptimizerConstructor`` knows only BEiT/MAE/ConvNeXt names.
"""

from __future__ import annotations

from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

NO_DECAY_NAMES = ("pos_embed", "cls_token", "level_embed")


def layer_id(name: str, num_layers: int) -> int:
    """0 for the embeddings, i + 1 for ViT block i, num_layers + 1 for the rest."""
    if name in ("backbone.pos_embed", "backbone.cls_token") or name.startswith("backbone.patch_embed."):
        return 0
    if name.startswith("backbone.blocks."):
        return int(name.split(".")[2]) + 1
    return num_layers + 1


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class ViTAdapterLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """``paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.95)``; biases, norms and
    embeddings get no weight decay."""

    def add_params(self, params: list[dict], module: nn.Module, **kwargs) -> None:
        module = module.module if is_model_wrapper(module) else module
        num_layers = int(self.paramwise_cfg.get("num_layers", len(module.backbone.blocks)))
        decay = float(self.paramwise_cfg.get("layer_decay_rate", 1.0))
        groups: dict[tuple[int, bool], dict] = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            no_decay = param.ndim == 1 or name.endswith(".bias") or name.split(".")[-1] in NO_DECAY_NAMES
            lid = layer_id(name, num_layers)
            scale = decay ** (num_layers + 1 - lid)
            group = groups.setdefault((lid, no_decay), {
                "params": [],
                "lr": self.base_lr * scale,
                "weight_decay": 0.0 if no_decay else self.base_wd,
            })
            group["params"].append(param)
        params.extend(groups[key] for key in sorted(groups))
        print_log(f"layer decay {decay} over {num_layers} ViT blocks: {len(groups)} parameter groups, lr scales "
                  f"{decay ** (num_layers + 1):.3f}..1", logger="current")
