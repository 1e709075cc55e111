"""Multi-scale deformable attention: one function for the backbone to call.

``ms_deform_attn`` runs the compiled extension (``python -m csrc.build``) where it is built
for the input's device and falls back to the pure-PyTorch reference elsewhere, with a
warning the first time each fallback is taken outside ``torch.compile`` tracing.
"""

from __future__ import annotations

import logging

import torch

from csrc.extension import ExtensionInfo, load
from csrc.reference import ms_deform_attn_reference

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


__all__ = ["ExtensionInfo", "extension_info", "load_extension", "ms_deform_attn", "ms_deform_attn_reference"]
