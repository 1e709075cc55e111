"""An optional class-discriminative term for property heads: cross-entropy over the cosine class
scores (issue 13, point 6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import nn


@MODELS.register_module()
class PropertyClassLoss(nn.Module):
    """Cross-entropy over the class scores s_c = cos(p, m_c) / ``temperature``, averaged over the
    pixels that are not ``ignore_index``.

    ProLab's cosine loss pulls p towards its own class's property set but never pushes it away
    from a class that shares most of those properties; prediction is an argmax over classes, so
    two such classes are told apart by small margins. This term asks for that margin directly.
    It is off in the paper's configs; add it beside ``PropertyCosineLoss`` in ``loss_decode``::

        loss_decode=[dict(type='PropertyCosineLoss', loss_weight=1.0),
                     dict(type='PropertyClassLoss', loss_weight=1.0)]

    The property head hands it class scores (``uses_class_scores``) computed on the logits' grid
    and upsampled as mmseg upsamples class logits: C channels at full resolution, not K.
    Scores lie in [0, 1] (p and m are non-negative), hence a temperature well under 1.
    """

    uses_class_scores = True

    def __init__(self, temperature: float = 0.05, loss_weight: float = 1.0,
                 loss_name: str = "loss_class") -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"PropertyClassLoss: temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    def forward(self, class_scores: torch.Tensor, label: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
        """class_scores (N, C, H, W) cosines; label (N, H, W) class indices -> scalar."""
        valid = (label != ignore_index).sum().clamp_min(1)
        total = F.cross_entropy(class_scores / self.temperature, label, ignore_index=ignore_index, reduction="sum")
        return self.loss_weight * total / valid

    @property
    def loss_name(self) -> str:
        """mmseg sums the losses whose names start with ``loss_`` into the training loss."""
        return self._loss_name
