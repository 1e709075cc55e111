"""Decode heads that predict properties instead of classes (ProLab, method.md section 4).

The head's last 1x1 convolution gives a D-dim embedding e per pixel (D = the label space's
embedding dimension). Against the L2-normalised property centres c_k it gives property logits
z_k = <e, c_k> (e itself is not normalised) and activations p_k = sigmoid(z_k / T), T = 0.04.
A class scores cos(p, m_c), m_c its row of the class x property multi-hot; the argmax is the
prediction, and the training loss is 1 - cos(p, m_label) (``PropertyCosineLoss``; the
per-pixel cosine comes from ``csrc.property_cosine``, a fused kernel on CPU). ``forward``
returns the logits z; ``predict`` the class scores, so mmseg's inference and ``IoUMetric``
work unchanged; ``predict_properties`` also returns p, for evaluation.

The label space is an input: ``label_space=<directory>`` in the head config. Its centres and
multi-hot live in non-trainable buffers, and its key is saved in the checkpoint (the head's
extra state), so loading weights trained on another label space fails loudly.

Any mmseg decode head whose ``forward`` ends in ``cls_seg`` (they all do) becomes a property
head by mixing ``PropertyOutputs`` in before it: the mixin swaps the classifier, the loss and
the decoding, and leaves the head's own layers alone. So a config changes
``type='ASPPHead'`` to ``type='PropertyASPPHead'``, adds ``label_space`` and the cosine loss,
and nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from mmseg.models.decode_heads import (ASPPHead, DepthwiseSeparableASPPHead, FCNHead, LRASPPHead, SegformerHead,
                                       UPerHead)
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import SampleList
from torch import nn

from csrc import property_cosine
from prolab_models.decode_heads.lraspp import GlobalPoolLRASPPHead
from prolab_models.errors import LabelSpaceMismatchError
from prolab_models.label_space import LabelSpace, load_label_space


def _load(label_space: str | Path | None, num_classes: int | None, head: str) -> LabelSpace:
    if label_space is None:
        raise LabelSpaceMismatchError(
            f"{head}: label_space is not set: give the label space directory "
            "(model.decode_head.label_space / model.auxiliary_head.label_space)")
    space = load_label_space(label_space)
    if num_classes is not None and num_classes != space.num_classes:
        raise LabelSpaceMismatchError(
            f"{head}: num_classes={num_classes} but label space {space.path} has "
            f"{space.num_classes} classes; leave num_classes out, it comes from the label space")
    return space


def _pixel_accuracy(prediction: torch.Tensor, label: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """mmseg's ``accuracy`` (top-1, percent of the non-ignored pixels, shape (1,)) from class
    indices rather than scores."""
    valid = label != ignore_index
    eps = torch.finfo(torch.float32).eps
    correct = ((prediction == label) & valid).sum().float().reshape(1) + eps
    return correct * (100.0 / (valid.sum().item() + eps))


class PropertyOutputs:
    """ProLab's property output for any mmseg decode head: mixed in before the head it changes
    (``class PropertyASPPHead(PropertyOutputs, ASPPHead)``). The head is built as mmseg builds it,
    with the label space's class count; then its classifier becomes a D-channel embedding layer
    and the label space is kept in buffers."""

    temperature: float
    label_space_key: str
    centres: torch.Tensor
    multi_hot: torch.Tensor

    def __init__(self, label_space: str | Path | None = None, temperature: float = 0.04,
                 num_classes: int | None = None, **kwargs) -> None:
        space = _load(label_space, num_classes, type(self).__name__)
        super().__init__(num_classes=space.num_classes, **kwargs)
        self.temperature = temperature
        self.label_space_key = space.key
        self.label_space_summary = f"{space.path} ({space.num_classes} classes, K={space.num_properties})"
        self.conv_seg = nn.Conv2d(self.channels, space.dim, kernel_size=1)
        self.register_buffer("centres", torch.tensor(space.centres))
        self.register_buffer("multi_hot", torch.tensor(space.multi_hot))

    @property
    def num_properties(self) -> int:
        return self.multi_hot.shape[1]

    def cls_seg(self, feat: torch.Tensor) -> torch.Tensor:
        """Property logits z = normalize(centres) . (W feat + b), where W, b (``conv_seg``) give
        the D-dim pixel embedding. The centres are folded into the 1x1 convolution, so it
        outputs K channels rather than materialising D: the same numbers, a fraction of the
        work. (N, channels, h, w) -> (N, K, h, w)."""
        if self.dropout is not None:
            feat = self.dropout(feat)
        centres = F.normalize(self.centres, dim=1)  # (K, D)
        weight = centres @ self.conv_seg.weight.flatten(1)  # (K, channels)
        return F.conv2d(feat, weight[:, :, None, None], centres @ self.conv_seg.bias)

    def properties_at(self, logits: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
        """Property activations p = sigmoid(z / T) at ``size``: logits are upsampled, as mmseg
        upsamples class logits, then squashed. Dividing by T before upsampling gives the same
        numbers (both are linear) on 16x fewer pixels."""
        logits = resize(logits / self.temperature, size=size, mode="bilinear", align_corners=self.align_corners)
        return torch.sigmoid(logits)

    def class_scores(self, properties: torch.Tensor) -> torch.Tensor:
        """(N, K, H, W) activations -> (N, C, H, W) cos(p, m_c); a zero row scores 0.
        Computed as (normalize(M) p) / |p| on (N, K, H*W) views: no K-channel copies, and C
        channels divided rather than K."""
        n, k, h, w = properties.shape
        flat = properties.flatten(2)
        dots = torch.matmul(F.normalize(self.multi_hot, dim=1), flat)  # (N, C, H*W)
        norms = torch.linalg.vector_norm(flat, dim=1, keepdim=True).clamp_min(1e-8)
        return (dots / norms).view(n, -1, h, w)

    def use_classes(self, multi_hot: torch.Tensor) -> None:
        """Score another class list with the trained properties, without retraining: the class x
        property matrix (C' x K) replaces the buffer; the weights and the centres stay as trained,
        and the checkpoint's label-space key is still the one the weights were trained with."""
        multi_hot = torch.as_tensor(multi_hot, dtype=self.multi_hot.dtype, device=self.multi_hot.device)
        if multi_hot.ndim != 2 or multi_hot.shape[1] != self.num_properties or not len(multi_hot):
            raise LabelSpaceMismatchError(
                f"{type(self).__name__}: a class matrix of shape {tuple(multi_hot.shape)} does not fit "
                f"{self.num_properties} trained properties (expected (classes, {self.num_properties}))")
        self.multi_hot = multi_hot.clone()
        self.num_classes = self.out_channels = multi_hot.shape[0]

    def loss_by_feat(self, logits: torch.Tensor, batch_data_samples: SampleList) -> dict[str, torch.Tensor]:
        """The losses on cos(p, m_label) per pixel at label resolution, from ``csrc.property_cosine``:
        on CPU one fused kernel (upsampling, sigmoid, cosine and their gradient) instead of
        about ten K-channel passes at full resolution. The logits are resized to the label's
        width here (bilinear's first half, on a quarter of the pixels); the kernel does the
        height, so p is what ``properties_at`` gives. A loss with ``uses_class_scores``
        (``PropertyClassLoss``) gets every class's cosine score instead."""
        label = self._stack_batch_gt(batch_data_samples).squeeze(1)
        height, width = label.shape[1:]
        rows = resize(logits / self.temperature, size=(logits.shape[2], width), mode="bilinear",
                      align_corners=self.align_corners)
        cosine, prediction = property_cosine(rows, F.normalize(self.multi_hot, dim=1), label, height,
                                             self.align_corners, self.ignore_index)
        losses = self.loss_decode if isinstance(self.loss_decode, nn.ModuleList) else [self.loss_decode]
        loss: dict[str, torch.Tensor] = {}
        scores = None
        for loss_fn in losses:
            if getattr(loss_fn, "uses_class_scores", False):
                if scores is None:
                    scores = self._training_class_scores(logits, (height, width))
                value = loss_fn(scores, label, ignore_index=self.ignore_index)
            else:
                value = loss_fn(cosine, label, ignore_index=self.ignore_index)
            loss[loss_fn.loss_name] = loss.get(loss_fn.loss_name, 0) + value
        loss["acc_seg"] = _pixel_accuracy(prediction, label, self.ignore_index)
        return loss

    def _training_class_scores(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """cos(p, m_c) for every class, for a loss that wants them (``PropertyClassLoss``): on the
        logits' grid, then upsampled to the label's size, so C channels rather than K reach full
        resolution."""
        scores = self.class_scores(torch.sigmoid(logits / self.temperature))
        return resize(scores, size=size, mode="bilinear", align_corners=self.align_corners)

    def _output_size(self, batch_img_metas: list[dict]) -> tuple[int, int]:
        """The size mmseg's ``predict_by_feat`` resizes to: the crop (slide), padded or image."""
        meta = batch_img_metas[0]
        if isinstance(meta["img_shape"], torch.Size):
            return meta["img_shape"]
        return meta["pad_shape"][:2] if "pad_shape" in meta else meta["img_shape"]

    def predict_by_feat(self, logits: torch.Tensor, batch_img_metas: list[dict]) -> torch.Tensor:
        """-> class scores (N, C, H, W), the seg_logits of mmseg's inference."""
        return self.class_scores(self.properties_at(logits, self._output_size(batch_img_metas)))

    def predict_properties(self, inputs: tuple[torch.Tensor, ...], batch_img_metas: list[dict],
                           test_cfg: dict) -> torch.Tensor:
        """-> class scores and property activations stacked on channels, (N, C + K, H, W)."""
        properties = self.properties_at(self.forward(inputs), self._output_size(batch_img_metas))
        return torch.cat([self.class_scores(properties), properties], dim=1)

    def get_extra_state(self) -> torch.Tensor:
        """The label space's key and summary, JSON in a uint8 tensor: state-dict consumers
        that expect tensors only (mmengine's broadcast, weights-only loading) pass it along."""
        record = json.dumps({"key": self.label_space_key, "label_space": self.label_space_summary})
        return torch.tensor(list(record.encode()), dtype=torch.uint8)

    def set_extra_state(self, state: torch.Tensor) -> None:
        saved = json.loads(bytes(state.tolist()).decode())
        if saved["key"] != self.label_space_key:
            raise LabelSpaceMismatchError(
                f"the weights were trained with label space {saved['key']!r} ({saved['label_space']}), "
                f"but the model uses {self.label_space_key!r} ({self.label_space_summary})")


@MODELS.register_module()
class PropertyUPerHead(PropertyOutputs, UPerHead):
    """UPerNet's head with ProLab's property output (the paper's decode head)."""


@MODELS.register_module()
class PropertyFCNHead(PropertyOutputs, FCNHead):
    """FCN's head with ProLab's property output (the paper's auxiliary head)."""


@MODELS.register_module()
class PropertyASPPHead(PropertyOutputs, ASPPHead):
    """DeepLabV3's ASPP head with ProLab's property output."""


@MODELS.register_module()
class PropertyDepthwiseSeparableASPPHead(PropertyOutputs, DepthwiseSeparableASPPHead):
    """DeepLabV3+'s head (separable ASPP and a low-level decoder) with ProLab's property output."""


@MODELS.register_module()
class PropertySegformerHead(PropertyOutputs, SegformerHead):
    """SegFormer's all-MLP head with ProLab's property output."""


@MODELS.register_module()
class PropertyLRASPPHead(PropertyOutputs, LRASPPHead):
    """MobileNetV3's Lite R-ASPP head with ProLab's property output."""


@MODELS.register_module()
class PropertyGlobalPoolLRASPPHead(PropertyOutputs, GlobalPoolLRASPPHead):
    """Lite R-ASPP with global image pooling (``GlobalPoolLRASPPHead``) and ProLab's property output."""
