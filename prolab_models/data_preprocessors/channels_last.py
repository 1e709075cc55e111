"""mmseg's data preprocessor, handing the model its batch in channels-last (NHWC) memory order.

A convolution on CPU (oneDNN) runs in NHWC whenever its input is NHWC and gives NHWC out, so
the whole convolutional network then runs in that order, with no copy a layer. On one core a
training step of the CamVid ResNet-18-D16 DeepLabV3+ (``camvid``) took 0.85-0.94 of its NCHW
time; the demo's and the stride-8 model's, 0.95-1.0 (benchmarks/RESULTS.md, "channels_last").
The values are the same; only the order of the floating-point sums differs. Weights stay as they
are (NCHW): converting the model as well measured the same, and a batch is the only tensor the
preprocessor owns.
"""

from __future__ import annotations

import torch
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS


@MODELS.register_module()
class ChannelsLastSegDataPreProcessor(SegDataPreProcessor):
    """``SegDataPreProcessor`` (same arguments) whose ``inputs`` are channels-last."""

    def forward(self, data: dict, training: bool = False) -> dict:
        data = super().forward(data, training)
        data["inputs"] = data["inputs"].contiguous(memory_format=torch.channels_last)
        return data
