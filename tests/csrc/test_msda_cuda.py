"""The CUDA kernels of prolab::ms_deform_attn against the grid_sample reference (float64
gradcheck, float32, and float16/bfloat16 with looser tolerances) and against mmcv's kernel."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import csrc
from csrc.extension import ExtensionInfo
from csrc.testing import MSDAInputs, random_inputs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.usefixtures("cuda_extension"),
]

BORDERS = (-0.1, 1.1)
MARGIN = 1e-3  # pixels between sampling points and the kinks of bilinear sampling
SMALL = dict(batch=2, levels=[(4, 5), (3, 2), (2, 2)], queries=3, heads=2, points=2)
REALISTIC = {
    "injector": dict(batch=2, levels=[(32, 32), (16, 16), (8, 8)], queries=256, heads=6, channels=16, points=4),
    "extractor": dict(batch=2, levels=[(16, 16)], queries=1344, heads=6, channels=16, points=4),
    "deit-base": dict(batch=2, levels=[(64, 64), (32, 32), (16, 16)], queries=1024, heads=12, channels=32, points=4),
}


@pytest.fixture
def cuda_extension(extension: ExtensionInfo) -> ExtensionInfo:
    if not extension.cuda:
        pytest.skip(f"the CUDA kernel was not built: {extension.cuda_detail}")
    return extension


def op(*inputs: torch.Tensor) -> torch.Tensor:
    return torch.ops.prolab.ms_deform_attn(*inputs)


def forward_and_grads(
    fn: Callable[..., torch.Tensor], inputs: MSDAInputs, grad_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, ...]:
    """The output and the gradients of <output, fixed random tensor>, that tensor rounded to
    ``grad_dtype`` first when given, so a float32 run can see the same one as a half run."""
    output = fn(*inputs)
    grad_output = torch.randn(output.shape, generator=torch.Generator().manual_seed(1))
    grad_output = grad_output.to(grad_dtype or output.dtype).to(output)
    grads = torch.autograd.grad(
        output, (inputs.value, inputs.sampling_locations, inputs.attention_weights), grad_output
    )
    return (output, *grads)


def assert_close_to_scale(got: tuple[torch.Tensor, ...], expected: tuple[torch.Tensor, ...], scale: float) -> None:
    """Each tensor within ``scale`` times the largest magnitude of its expected value."""
    for name, a, b in zip(("output", "grad value", "grad locations", "grad weights"), got, expected):
        assert a.dtype == b.dtype
        torch.testing.assert_close(
            a.float(), b.float(), rtol=0, atol=scale * b.abs().max().item(), msg=lambda m, n=name: f"{n}: {m}"
        )


# Channel counts cover one channel per lane (16), idle lanes (3, 5) and several per lane (48).
@pytest.mark.parametrize("channels", [3, 5, 16, 48])
def test_gradcheck_float64(channels: int) -> None:
    inputs = random_inputs(
        **SMALL,
        channels=channels,
        dtype=torch.float64,
        device="cuda",
        location_range=BORDERS,
        margin=MARGIN,
        requires_grad=True,
    )
    assert torch.autograd.gradcheck(op, tuple(inputs), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", REALISTIC, ids=list(REALISTIC))
def test_float32_matches_reference(shape: str) -> None:
    inputs = random_inputs(
        **REALISTIC[shape], device="cuda", location_range=BORDERS, margin=MARGIN, requires_grad=True
    )
    assert_close_to_scale(forward_and_grads(op, inputs), forward_and_grads(csrc.ms_deform_attn_reference, inputs), 1e-5)


@pytest.mark.parametrize(("dtype", "scale"), [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
@pytest.mark.parametrize("shape", REALISTIC, ids=list(REALISTIC))
def test_half_types_match_float32_reference(shape: str, dtype: torch.dtype, scale: float) -> None:
    """Accumulation is in float32, so the error is about one rounding of each result to
    ``dtype`` (eps 1e-3 for float16, 8e-3 for bfloat16): compared with the float32
    reference on the same rounded inputs, within twice that of each tensor's scale. No
    margin is needed: half-precision locations times power-of-two map sizes are exact in
    float32, so both sides put every point in the same cell."""
    inputs = random_inputs(**REALISTIC[shape], dtype=dtype, device="cuda", location_range=BORDERS, requires_grad=True)
    as_float = MSDAInputs(*(t.detach().float().requires_grad_() if t.is_floating_point() else t for t in inputs))
    got = forward_and_grads(op, inputs)
    expected = forward_and_grads(csrc.ms_deform_attn_reference, as_float, grad_dtype=dtype)
    assert_close_to_scale(got, tuple(t.to(dtype) for t in expected), scale)


def test_matches_mmcv() -> None:
    mmcv_msda = pytest.importorskip("mmcv.ops.multi_scale_deform_attn")
    from mmcv.ops import get_compiling_cuda_version

    if get_compiling_cuda_version() == "not available":
        pytest.skip("mmcv was built without its CUDA ops")

    def mmcv_op(*inputs: torch.Tensor) -> torch.Tensor:
        return mmcv_msda.MultiScaleDeformableAttnFunction.apply(*inputs, 64)

    inputs = random_inputs(
        **REALISTIC["injector"], device="cuda", location_range=BORDERS, margin=MARGIN, requires_grad=True
    )
    assert_close_to_scale(forward_and_grads(op, inputs), forward_and_grads(mmcv_op, inputs), 1e-5)


def test_public_function_runs_the_cuda_kernel_under_autocast() -> None:
    inputs = random_inputs(**REALISTIC["injector"], device="cuda", location_range=BORDERS)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        output = csrc.ms_deform_attn(inputs.value.bfloat16(), *inputs[1:])
    assert output.dtype == torch.bfloat16
    expected = op(inputs.value.bfloat16(), *inputs[1:3], *(t.bfloat16() for t in inputs[3:]))
    torch.testing.assert_close(output, expected, rtol=0, atol=0)


def test_compiles_as_one_graph_on_cuda() -> None:
    def loss(*inputs: torch.Tensor) -> torch.Tensor:
        return csrc.ms_deform_attn(*inputs).square().sum()

    inputs = random_inputs(**SMALL, channels=16, device="cuda", location_range=BORDERS, requires_grad=True)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    got, expected = compiled(*inputs), loss(*inputs)
    torch.testing.assert_close(got, expected)
    differentiable = (inputs.value, inputs.sampling_locations, inputs.attention_weights)
    for a, b in zip(torch.autograd.grad(got, differentiable), torch.autograd.grad(expected, differentiable)):
        torch.testing.assert_close(a, b)


def test_inputs_on_other_devices_fail_naming_the_argument() -> None:
    inputs = random_inputs(**SMALL, channels=4, device="cuda")
    with pytest.raises(RuntimeError, match=r"spatial_shapes must be on value's device cuda:0, got cpu"):
        op(inputs.value, inputs.spatial_shapes.cpu(), *inputs[2:])
    with pytest.raises(RuntimeError, match=r"attention_weights must be on value's device cuda:0, got cpu"):
        op(*inputs[:4], inputs.attention_weights.cpu())


def test_unsupported_dtype_fails_naming_the_kernel() -> None:
    inputs = random_inputs(**SMALL, channels=4, device="cuda")
    eight_bit = MSDAInputs(*(t.to(torch.float8_e4m3fn) if t.is_floating_point() else t for t in inputs))
    with pytest.raises(RuntimeError, match=r"CUDA kernel supports float64, float32, float16 and bfloat16"):
        op(*eight_bit)
