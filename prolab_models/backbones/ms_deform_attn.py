"""Multi-scale deformable attention as a module (Deformable-DETR's ``MSDeformAttn``).

Each query predicts, per head, level and point, a 2-d offset from its reference point and an
attention weight; values are sampled bilinearly at those locations by the ``csrc`` operator
(compiled kernel where built, PyTorch reference elsewhere) and mixed by the softmaxed weights.
``ratio`` shrinks the value dimension (ViT-Adapter's ``deform_ratio``) to save compute.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from csrc import ms_deform_attn


class MSDeformAttn(nn.Module):
    def __init__(self, dim: int, n_levels: int, n_heads: int, n_points: int, ratio: float = 1.0) -> None:
        super().__init__()
        value_dim = int(dim * ratio)
        if value_dim % n_heads:
            raise ValueError(f"MSDeformAttn: value dim {value_dim} (dim {dim} x ratio {ratio}) "
                             f"is not divisible by n_heads={n_heads}")
        self.n_levels, self.n_heads, self.n_points = n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(dim, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(dim, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(dim, value_dim)
        self.output_proj = nn.Linear(value_dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable-DETR's init: offsets start on a ring of directions, one per head, the
        k-th point k steps out; uniform attention; Xavier projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid *= torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        feat: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
    ) -> torch.Tensor:
        """query (N, Q, dim); reference_points (1 or N, Q, 1, 2) as (x, y) in [0, 1];
        feat (N, S, dim), the levels of ``spatial_shapes`` (L, 2) flattened -> (N, Q, dim)."""
        n, queries, _ = query.shape
        heads, levels, points = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(feat).view(n, feat.shape[1], heads, -1)
        offsets = self.sampling_offsets(query).view(n, queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(n, queries, heads, levels * points)
        weights = F.softmax(weights, -1).view(n, queries, heads, levels, points)
        # offsets are in pixels of each level: normalise by its (w, h)
        normaliser = spatial_shapes.flip(-1).to(offsets.dtype)
        locations = reference_points[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
        output = ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)
        return self.output_proj(output)
