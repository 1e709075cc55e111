"""mmseg's EncoderDecoder that also returns the property activations of its predictions."""

from __future__ import annotations

import torch
from mmengine.structures import PixelData
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import OptSampleList, SampleList
from torch import nn

from prolab_models.decode_heads.property_head import PropertyOutputs


@MODELS.register_module()
class PropertyEncoderDecoder(EncoderDecoder):
    """Inference carries class scores and property activations together (C + K channels)
    through mmseg's whole/slide inference, un-padding and resizing; ``predict`` then splits
    them: ``seg_logits`` and ``pred_sem_seg`` are the classes' (what ``IoUMetric`` reads),
    ``pred_properties`` holds p (K, H, W) per image, for property metrics and maps.

    ``calibrate`` lowers chosen classes' scores before the argmax (calibrated stacking);
    ``seg_logits`` keep the raw scores."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(self.decode_head, PropertyOutputs):
            raise TypeError(f"PropertyEncoderDecoder needs a property decode head, got {type(self.decode_head).__name__}")
        self.out_channels = self.num_classes + self.decode_head.num_properties
        self.offsets: torch.Tensor | None = None

    def calibrate(self, seen: torch.Tensor, gamma: float) -> None:
        """Lower the scores of the classes where ``seen`` (C booleans) is true by ``gamma`` before
        the argmax: seen classes, trained on, outscore classes added from words alone (Chao et
        al. 2016). Scores are cosines in [0, 1]; 0 leaves predictions as they were. A new class
        list (``use_classes``) clears it."""
        seen = torch.as_tensor(seen, dtype=torch.bool)
        if seen.shape != (self.num_classes,):
            raise ValueError(f"calibrate: {tuple(seen.shape)} flags for {self.num_classes} classes")
        self.offsets = None if gamma == 0 else seen.float() * gamma

    def use_classes(self, multi_hot: torch.Tensor) -> None:
        """Score another class list (C' x K rows over the trained properties) without retraining:
        the decode head's and every property auxiliary head's class matrix is replaced, and
        inference returns C' class channels. Call it after loading the weights."""
        heads = [self.decode_head]
        if getattr(self, "auxiliary_head", None) is not None:
            auxiliary = self.auxiliary_head
            heads += list(auxiliary) if isinstance(auxiliary, nn.ModuleList) else [auxiliary]
        for head in heads:
            if isinstance(head, PropertyOutputs):
                head.use_classes(multi_hot)
        self.num_classes = self.decode_head.num_classes
        self.out_channels = self.num_classes + self.decode_head.num_properties
        self.offsets = None

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: list[dict]) -> torch.Tensor:
        return self.decode_head.predict_properties(self.extract_feat(inputs), batch_img_metas, self.test_cfg)

    def predict(self, inputs: torch.Tensor, data_samples: OptSampleList = None) -> SampleList:
        results = super().predict(inputs, data_samples)
        for sample in results:
            scores, properties = sample.seg_logits.data.split([self.num_classes, self.decode_head.num_properties])
            sample.seg_logits = PixelData(data=scores)
            calibrated = scores if self.offsets is None else scores - self.offsets.to(scores)[:, None, None]
            sample.pred_sem_seg = PixelData(data=calibrated.argmax(dim=0, keepdim=True))
            sample.pred_properties = PixelData(data=properties)
        return results
