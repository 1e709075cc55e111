"""ProLab's loss: 1 - cos(predicted properties, the multi-hot properties of the pixel's class)."""

from __future__ import annotations

import torch
from mmseg.registry import MODELS
from torch import nn


@MODELS.register_module()
class PropertyCosineLoss(nn.Module):
    """Cosine distance between per-pixel property activations p and their class's property set
    m_label, averaged over the pixels that are not ``ignore_index``.

    It takes the per-pixel cosine cos(p, m_label) that the property heads compute with
    ``csrc.property_cosine`` (one fused pass on CPU; no per-pixel (K,) target or class-score
    map is materialised). Cosine, not a per-property BCE: the target is a *set* of properties
    and only its direction matters, so classes with many properties weigh as much as classes
    with few.
    """

    def __init__(self, loss_weight: float = 1.0, loss_name: str = "loss_prop") -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    def forward(self, label_cosine: torch.Tensor, label: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
        """label_cosine (N, H, W) = cos(p, m_label); label (N, H, W) class indices -> scalar."""
        valid = label != ignore_index
        # sum / count rather than mean over a boolean selection: no copy, and 0 (with a
        # graph) for a crop of only ignored pixels
        distance = ((1.0 - label_cosine) * valid).sum() / valid.sum().clamp_min(1)
        return self.loss_weight * distance

    @property
    def loss_name(self) -> str:
        """mmseg sums the losses whose names start with ``loss_`` into the training loss."""
        return self._loss_name
