"""Multi-scale deformable attention in pure PyTorch (``grid_sample``): the reference.

The Deformable-DETR operator: for each query, head, level and sampling point, bilinear
sampling of the value map at a learned location, weighted by softmaxed attention weights.
Tests compare the compiled kernels against this; it is also the fallback where the
extension is not built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ms_deform_attn_reference(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """value (N, S, H, C), spatial_shapes (L, 2) as (h, w), level_start_index (L,),
    sampling_locations (N, Q, H, L, P, 2) in [0, 1] as (x, y), attention_weights
    (N, Q, H, L, P) -> output (N, Q, H * C). ``level_start_index`` is implied by the
    shapes; it is taken for the standard signature."""
    del level_start_index
    n, _, heads, channels = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    value_levels = value.split(sizes, dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample wants [-1, 1]
    sampled = []
    for level, (h, w) in enumerate(spatial_shapes.tolist()):
        # (N, h*w, H, C) -> (N*H, C, h, w)
        value_l = value_levels[level].flatten(2).transpose(1, 2).reshape(n * heads, channels, int(h), int(w))
        # (N, Q, H, P, 2) -> (N*H, Q, P, 2)
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(
            F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False)
        )  # (N*H, C, Q, P)
    # (N, Q, H, L, P) -> (N*H, 1, Q, L*P)
    weights = attention_weights.transpose(1, 2).reshape(n * heads, 1, queries, levels * points)
    output = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)  # (N*H, C, Q)
    return output.view(n, heads * channels, queries).transpose(1, 2).contiguous()
