"""The ops in pure PyTorch: the references the kernels are tested against, and the fallback
where the extension is not built (or has no kernel for a device).

``ms_deform_attn_reference``: the Deformable-DETR operator (``grid_sample``): for each query,
head, level and sampling point, bilinear sampling of the value map at a learned location,
weighted by softmaxed attention weights. ``property_cosine_reference``: ProLab's per-pixel
cosine between sigmoid property activations and the label's property row.
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


def property_cosine_reference(
    rows: torch.Tensor,
    multi_hot: torch.Tensor,
    label: torch.Tensor,
    out_height: int,
    align_corners: bool,
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """rows (N, K, h, W) logits / T at the output width, multi_hot (C, K) L2-normalised rows,
    label (N, H, W) int64 -> cosine (N, H, W) = cos(sigmoid(upsampled rows), m_label), 0 where
    ignored; norm (N, H, W) = max(|p|, 1e-8); prediction (N, H, W) = argmax_c cos(p, m_c)."""
    n, _, _, width = rows.shape
    upsampled = F.interpolate(rows, size=(out_height, width), mode="bilinear", align_corners=align_corners)
    properties = torch.sigmoid(upsampled).flatten(2)  # (N, K, H*W)
    dots = torch.matmul(multi_hot, properties)  # (N, C, H*W)
    norm = torch.linalg.vector_norm(properties, dim=1).clamp_min(1e-8)  # (N, H*W)
    flat_label = label.flatten(1)
    valid = flat_label != ignore_index
    label_dots = dots.gather(1, torch.where(valid, flat_label, 0).unsqueeze(1)).squeeze(1)
    cosine = label_dots / norm * valid
    shape = (n, out_height, width)
    return cosine.view(shape), norm.view(shape), dots.argmax(1).view(shape)
