"""Lite R-ASPP (MobileNetV3's segmentation head) with its image pooling global."""

from __future__ import annotations

from mmseg.models.decode_heads import LRASPPHead
from mmseg.registry import MODELS
from torch import nn


@MODELS.register_module()
class GlobalPoolLRASPPHead(LRASPPHead):
    """mmseg's ``LRASPPHead`` with the image branch pooled over the whole map, as torchvision's
    LRASPP pools it. mmseg's averages 49x49 windows at stride (16, 20), sized for Cityscapes'
    1024x2048 crops, and fails on a map smaller than 49 pixels: any crop under 392 px at stride 8,
    under 1568 px at stride 32."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.image_pool[0] = nn.AdaptiveAvgPool2d(1)
