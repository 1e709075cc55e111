"""The project's compiled ops, one function each for the models to call.

``ms_deform_attn`` (multi-scale deformable attention, for the ViT-Adapter backbone) and
``property_cosine`` (ProLab's loss term, for the property heads) run the compiled extension
(``python -m csrc.build``) where it has a kernel for the input's device and fall back to
the pure-PyTorch references elsewhere. ``ms_deform_attn`` warns the first time each of its
fallbacks is taken outside ``torch.compile`` tracing; ``property_cosine`` has CPU kernels
only and takes the reference on GPUs silently, where the composite is cheap next to the
model.
"""

from __future__ import annotations

import logging

import torch

from csrc.extension import ExtensionInfo, load
from csrc.reference import ms_deform_attn_reference, property_cosine_reference

log = logging.getLogger(__name__)

_info: ExtensionInfo = load()
_warned: set[str] = set()


def load_extension() -> ExtensionInfo:
    """Pick up a library built after import (the tests and benchmarks build, then call this)."""
    global _info
    _info = load()
    return _info


def extension_info() -> ExtensionInfo:
    """What the extension provides in this process: loaded or not, CPU and CUDA kernels, why."""
    return _info


def _fallback_reason(device: torch.device) -> str | None:
    if not _info.loaded:
        return f"MSDA extension unavailable: {_info.detail}"
    if device.type == "cuda" and not _info.cuda:
        return f"MSDA CUDA kernel not built: {_info.cuda_detail}"
    if device.type not in ("cpu", "cuda"):
        return f"no MSDA kernel for device type {device.type}"
    return None


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """value (N, S, H, C), spatial_shapes (L, 2) int64 as (h, w), level_start_index (L,)
    int64, sampling_locations (N, Q, H, L, P, 2) in [0, 1] as (x, y), attention_weights
    (N, Q, H, L, P) -> (N, Q, H * C).

    sampling_locations and attention_weights are cast to value's dtype, as mmcv does, since
    under autocast the softmaxed weights and the locations arrive in float32 while value is
    half. The kernels want contiguous inputs and say which one is not.
    """
    sampling_locations = sampling_locations.to(value.dtype)
    attention_weights = attention_weights.to(value.dtype)
    reason = _fallback_reason(value.device)
    if reason is None:
        return torch.ops.prolab.ms_deform_attn(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    if not torch.compiler.is_compiling() and reason not in _warned:
        _warned.add(reason)
        log.warning("%s; using the PyTorch reference", reason)
    return ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


def property_cosine(
    rows: torch.Tensor,
    multi_hot: torch.Tensor,
    label: torch.Tensor,
    out_height: int,
    align_corners: bool,
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """rows (N, K, h, W): property logits / T resized to the label's width; multi_hot (C, K):
    L2-normalised class rows; label (N, H, W) int64 -> (cosine, prediction), both (N, H, W):
    cos(p, m_label) with p = sigmoid(rows upsampled to H) (0 at ignored pixels; differentiable
    in rows), and the argmax class of cos(p, m_c). See csrc/property_cosine.cpp."""
    if _info.loaded and rows.device.type == "cpu" and rows.dtype in (torch.float32, torch.float64):
        cosine, _, prediction = torch.ops.prolab.property_cosine(
            rows.contiguous(), multi_hot.to(rows.dtype).contiguous(), label.contiguous(),
            out_height, align_corners, ignore_index,
        )
    else:
        cosine, _, prediction = property_cosine_reference(
            rows, multi_hot.to(rows.dtype), label, out_height, align_corners, ignore_index
        )
    return cosine, prediction


__all__ = [
    "ExtensionInfo", "extension_info", "load_extension", "ms_deform_attn", "ms_deform_attn_reference",
    "property_cosine", "property_cosine_reference",
]
