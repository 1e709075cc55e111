"""Random MSDA inputs shaped like ViT-Adapter's, shared by the tests and the benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch


class MSDAInputs(NamedTuple):
    """The five arguments of ``ms_deform_attn``, in order, so ``op(*inputs)`` works."""

    value: torch.Tensor
    spatial_shapes: torch.Tensor
    level_start_index: torch.Tensor
    sampling_locations: torch.Tensor
    attention_weights: torch.Tensor


def random_inputs(
    batch: int,
    levels: Sequence[tuple[int, int]],
    queries: int,
    heads: int,
    channels: int,
    points: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    location_range: tuple[float, float] = (0.0, 1.0),
    margin: float = 0.0,
    requires_grad: bool = False,
    seed: int = 0,
) -> MSDAInputs:
    """Normal values, uniform locations in ``location_range`` (widen it past [0, 1] to hit the
    zero padding) and weights softmaxed over levels x points, as the attention module does.

    ``margin`` > 0 keeps every point at least that many pixels off integer pixel coordinates,
    where bilinear sampling has kinks: there a float32 rounding difference between two
    implementations can flip the cell a point falls in and change its location gradient by
    O(value x map size), which no tolerance should have to absorb.
    """
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(levels, dtype=torch.long)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    total = int(sizes.sum())
    low, high = location_range
    value = torch.randn(batch, total, heads, channels, generator=generator, dtype=torch.float64)
    locations = low + (high - low) * torch.rand(
        batch, queries, heads, len(levels), points, 2, generator=generator, dtype=torch.float64
    )
    if margin > 0:
        map_size = spatial_shapes.flip(1).to(torch.float64)[:, None, :]  # (L, 1, 2) as (w, h), like (x, y)
        pixels = locations * map_size - 0.5
        nearest = pixels.round()
        offset = pixels - nearest
        nudged = nearest + torch.where(offset < 0, -margin, margin)
        locations = (torch.where(offset.abs() < margin, nudged, pixels) + 0.5) / map_size
    logits = torch.randn(batch, queries, heads, len(levels) * points, generator=generator, dtype=torch.float64)
    weights = logits.softmax(-1).view(batch, queries, heads, len(levels), points)
    floats = [t.to(device=device, dtype=dtype).requires_grad_(requires_grad) for t in (value, locations, weights)]
    return MSDAInputs(floats[0], spatial_shapes.to(device), level_start_index.to(device), floats[1], floats[2])
