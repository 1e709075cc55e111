"""CPU multi-scale deformable attention: the extension's kernel against the references.

Shapes are ViT-Adapter-tiny's on the camvid config (embed 192, 6 deform heads, 4 points,
deform_ratio 0.5 -> head dim 16, 256x256 crop, batch 8): the injector (the 16x16 ViT tokens
query the 3-level spatial prior, 32x32 + 16x16 + 8x8 = 1344 values) and the extractor (the
1344 multi-scale tokens query the 256 ViT tokens, one level). Each time is the best of
repeated passes, forward alone and forward + backward (all three gradients), on the default
torch threads. The last line, ``msda_cpu_speedup=<x>``, is reference time / kernel time summed over both shapes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

import csrc
from csrc.build import build
from csrc.testing import MSDAInputs, random_inputs

BATCH, HEADS, HEAD_DIM, POINTS = 8, 6, 16, 4
C_LEVELS = [(32, 32), (16, 16), (8, 8)]  # 1/8, 1/16, 1/32 of the 256x256 crop
VIT_LEVEL = [(16, 16)]  # the ViT tokens at 1/16
SHAPES = {
    "injector (256 queries, 3 levels / 1344 values)": (VIT_LEVEL[0][0] * VIT_LEVEL[0][1], C_LEVELS),
    "extractor (1344 queries, 1 level / 256 values)": (sum(h * w for h, w in C_LEVELS), VIT_LEVEL),
}
WARMUP, REPEATS = 2, 10

Op = Callable[..., torch.Tensor]


def _mmcv_op() -> Op | None:
    """mmcv's pure-PyTorch CPU path, adapted to the standard signature, where mmcv imports."""
    try:
        from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
    except ImportError:
        return None

    def op(
        value: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        sampling_locations: torch.Tensor,
        attention_weights: torch.Tensor,
    ) -> torch.Tensor:
        return multi_scale_deformable_attn_pytorch(value, spatial_shapes, sampling_locations, attention_weights)

    return op


def _pass(op: Op, inputs: MSDAInputs, backward: bool) -> None:
    if backward:
        output = op(*inputs)
        torch.autograd.grad(output, (inputs.value, inputs.sampling_locations, inputs.attention_weights), output)
    else:
        with torch.no_grad():
            op(*inputs)


def _best_seconds(ops: dict[str, Op], inputs: MSDAInputs, backward: bool) -> dict[str, float]:
    """Fastest of REPEATS passes per op, taken round-robin so that load from other processes
    falls on every op alike; the minimum is the least disturbed estimate (as timeit advises)."""
    times: dict[str, list[float]] = {label: [] for label in ops}
    for step in range(WARMUP + REPEATS):
        for label, op in ops.items():
            start = time.perf_counter()
            _pass(op, inputs, backward)
            if step >= WARMUP:
                times[label].append(time.perf_counter() - start)
    return {label: min(values) for label, values in times.items()}


def main() -> None:
    build()
    info = csrc.load_extension()
    if not info.loaded:
        raise SystemExit(f"msda benchmark needs the extension: {info.detail}")
    ops: dict[str, Op] = {"kernel": torch.ops.prolab.ms_deform_attn, "reference": csrc.ms_deform_attn_reference}
    mmcv_op = _mmcv_op()
    if mmcv_op is not None:
        ops["mmcv_pytorch"] = mmcv_op
    print(f"msda: torch {torch.__version__}, {torch.get_num_threads()} threads, float32, best of {REPEATS}")
    totals = dict.fromkeys(ops, 0.0)
    for name, (queries, levels) in SHAPES.items():
        inputs = random_inputs(BATCH, levels, queries, HEADS, HEAD_DIM, POINTS, requires_grad=True)
        forward = _best_seconds(ops, inputs, backward=False)
        both = _best_seconds(ops, inputs, backward=True)
        for label in ops:
            totals[label] += both[label]
            print(
                f"msda {name}: {label:<13} forward {forward[label] * 1e3:8.2f} ms"
                f"   forward+backward {both[label] * 1e3:8.2f} ms"
                f"   (x{both[label] / both['kernel']:.1f} of kernel)"
            )
    for label in ops:
        print(f"msda total forward+backward: {label:<13} {totals[label] * 1e3:8.2f} ms")
    print(f"msda_cpu_speedup={totals['reference'] / totals['kernel']:.2f}")


if __name__ == "__main__":
    main()
