"""The CPU kernels of prolab::ms_deform_attn against the grid_sample reference, their
gradients, their input checks, and the op's torch.library registration (fake kernels and
autograd, so torch.compile traces it whole)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import csrc
from csrc.testing import MSDAInputs, random_inputs

pytestmark = pytest.mark.usefixtures("extension")

# A small problem with three levels of uneven shapes, locations beyond the borders too; 3
# channels take the generic kernel, the head sizes ViT-Adapter uses get specialised ones.
SMALL = dict(batch=2, levels=[(4, 5), (3, 2), (2, 2)], queries=3, heads=2, channels=3, points=2)
# ViT-Adapter-tiny's injector and extractor at batch 2.
REALISTIC = {
    "injector": dict(batch=2, levels=[(32, 32), (16, 16), (8, 8)], queries=256, heads=6, channels=16, points=4),
    "extractor": dict(batch=2, levels=[(16, 16)], queries=1344, heads=6, channels=16, points=4),
}
BORDERS = (-0.1, 1.1)
MARGIN = 1e-3  # pixels between sampling points and the kinks of bilinear sampling


def op(*inputs: torch.Tensor) -> torch.Tensor:
    return torch.ops.prolab.ms_deform_attn(*inputs)


def forward_and_grads(fn: Callable[..., torch.Tensor], inputs: MSDAInputs) -> tuple[torch.Tensor, ...]:
    """The output and the gradients of <output, fixed random tensor> for value, locations, weights."""
    output = fn(*inputs)
    grad_output = torch.randn(output.shape, generator=torch.Generator().manual_seed(1), dtype=output.dtype)
    grads = torch.autograd.grad(
        output, (inputs.value, inputs.sampling_locations, inputs.attention_weights), grad_output
    )
    return (output, *grads)


@pytest.mark.parametrize("channels", [3, 16, 32])
def test_gradcheck_float64(channels: int) -> None:
    inputs = random_inputs(
        **{**SMALL, "channels": channels},
        dtype=torch.float64,
        location_range=BORDERS,
        margin=MARGIN,
        requires_grad=True,
        seed=channels,
    )
    assert torch.autograd.gradcheck(op, tuple(inputs), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", REALISTIC, ids=list(REALISTIC))
def test_float32_matches_reference(shape: str) -> None:
    """Output and every gradient within 1e-5 of the tensor's largest magnitude: atol 1e-5 on
    the O(1) outputs and value gradients, proportionally more on the location gradients,
    which are scaled by the map size and reach a few hundred. Measured: about 1e-6 of it."""
    inputs = random_inputs(**REALISTIC[shape], location_range=BORDERS, margin=MARGIN, requires_grad=True)
    got = forward_and_grads(op, inputs)
    expected = forward_and_grads(csrc.ms_deform_attn_reference, inputs)
    for name, a, b in zip(("output", "grad value", "grad locations", "grad weights"), got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * b.abs().max().item(), msg=lambda m, n=name: f"{n}: {m}")


def test_float64_matches_reference_to_rounding() -> None:
    inputs = random_inputs(**REALISTIC["injector"], dtype=torch.float64, location_range=BORDERS, requires_grad=True)
    for got, expected in zip(forward_and_grads(op, inputs), forward_and_grads(csrc.ms_deform_attn_reference, inputs)):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_point_one_pixel_before_the_map_has_grid_samples_gradient() -> None:
    """x * w - 0.5 == -1 exactly: zero weight, but a one-sided location gradient, as in grid_sample."""
    inputs = random_inputs(**SMALL, dtype=torch.float64, requires_grad=True)
    width = inputs.spatial_shapes[:, 1].to(torch.float64)[:, None]  # (L, 1): each level's own w
    with torch.no_grad():
        inputs.sampling_locations[..., 0] = -0.5 / width
    got = forward_and_grads(op, inputs)
    expected = forward_and_grads(csrc.ms_deform_attn_reference, inputs)
    assert got[2][..., 0].abs().min() > 0
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_points_off_the_map_contribute_nothing() -> None:
    inputs = random_inputs(**SMALL, dtype=torch.float64, location_range=(1.5, 2.0), requires_grad=True)
    output, *grads = forward_and_grads(op, inputs)
    assert not output.any()
    assert not any(grad.any() for grad in grads)


def test_results_do_not_depend_on_thread_count() -> None:
    """No atomics on CPU: each output and gradient element has one writer in a fixed order."""
    inputs = random_inputs(**REALISTIC["injector"], location_range=BORDERS, requires_grad=True)
    threads = torch.get_num_threads()
    many = forward_and_grads(op, inputs)
    torch.set_num_threads(1)
    try:
        one = forward_and_grads(op, inputs)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(many, one))


def test_opcheck_schema_fake_and_autograd_registrations() -> None:
    inputs = random_inputs(**SMALL, location_range=BORDERS, requires_grad=True)
    torch.library.opcheck(torch.ops.prolab.ms_deform_attn.default, tuple(inputs))


def test_compiles_as_one_graph_with_backward() -> None:
    def loss(*inputs: torch.Tensor) -> torch.Tensor:
        return csrc.ms_deform_attn(*inputs).square().sum()

    inputs = random_inputs(**SMALL, location_range=BORDERS, requires_grad=True)
    differentiable = (inputs.value, inputs.sampling_locations, inputs.attention_weights)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    got = compiled(*inputs)
    expected = loss(*inputs)
    torch.testing.assert_close(got, expected)
    for a, b in zip(torch.autograd.grad(got, differentiable), torch.autograd.grad(expected, differentiable)):
        torch.testing.assert_close(a, b)


def test_public_function_runs_the_kernel_and_casts_like_mmcv() -> None:
    """Under autocast the locations and softmaxed weights come in float32 next to a half value;
    ms_deform_attn casts them to value's dtype and their gradients come back in their own."""
    assert csrc.extension_info().loaded and csrc.extension_info().cpu
    inputs = random_inputs(**SMALL, dtype=torch.float64, location_range=BORDERS, requires_grad=True)
    value = inputs.value.detach().float().requires_grad_()
    output = csrc.ms_deform_attn(value, *inputs[1:])
    assert output.dtype == torch.float32
    expected = op(value, *inputs[1:3], inputs.sampling_locations.float(), inputs.attention_weights.float())
    torch.testing.assert_close(output, expected, rtol=0, atol=0)
    grad_locations, grad_weights = torch.autograd.grad(
        output.sum(), (inputs.sampling_locations, inputs.attention_weights)
    )
    assert grad_locations.dtype == grad_weights.dtype == torch.float64


def _replace(**changes: Callable[[MSDAInputs], torch.Tensor]) -> Callable[[MSDAInputs], MSDAInputs]:
    return lambda inputs: inputs._replace(**{name: change(inputs) for name, change in changes.items()})


BAD_INPUTS = {
    "value 3-D": (_replace(value=lambda i: i.value[0]), r"value must be 4-D"),
    "value integer": (_replace(value=lambda i: i.value.long()), r"value must be a floating-point tensor"),
    "value float16": (
        _replace(
            value=lambda i: i.value.half(),
            sampling_locations=lambda i: i.sampling_locations.half(),
            attention_weights=lambda i: i.attention_weights.half(),
        ),
        r"CPU kernel supports float32 and float64",
    ),
    "value non-contiguous": (_replace(value=lambda i: i.value.mT.contiguous().mT), r"value must be contiguous"),
    "spatial_shapes int32": (
        _replace(spatial_shapes=lambda i: i.spatial_shapes.int()),
        r"spatial_shapes must be int64",
    ),
    "spatial_shapes 1-D": (
        _replace(spatial_shapes=lambda i: i.spatial_shapes.flatten()),
        r"spatial_shapes must be \(levels, 2\)",
    ),
    "spatial_shapes not covering value": (
        _replace(value=lambda i: torch.cat([i.value, i.value[:, :1]], dim=1)),
        r"spatial_shapes cover 30 rows but value has S = 31",
    ),
    "level_start_index wrong length": (
        _replace(level_start_index=lambda i: i.level_start_index[:2]),
        r"level_start_index must be \(levels,\)",
    ),
    "level_start_index wrong values": (
        _replace(level_start_index=lambda i: i.level_start_index + 1),
        r"level_start_index\[0\] must be 0",
    ),
    "sampling_locations 5-D": (
        _replace(sampling_locations=lambda i: i.sampling_locations[..., 0]),
        r"sampling_locations must be \(N, queries, heads, levels, points, 2\)",
    ),
    "sampling_locations wrong heads": (
        _replace(sampling_locations=lambda i: i.sampling_locations[:, :, :1]),
        r"sampling_locations must be \(N, queries, heads, levels, points, 2\)",
    ),
    "sampling_locations float64": (
        _replace(sampling_locations=lambda i: i.sampling_locations.double()),
        r"sampling_locations must have value's dtype Float, got Double",
    ),
    "sampling_locations non-contiguous": (
        _replace(sampling_locations=lambda i: i.sampling_locations.mT.contiguous().mT),
        r"sampling_locations must be contiguous",
    ),
    "attention_weights wrong points": (
        _replace(attention_weights=lambda i: i.attention_weights[..., :1].contiguous()),
        r"attention_weights must be \(N, queries, heads, levels, points\)",
    ),
    "attention_weights non-contiguous": (
        _replace(attention_weights=lambda i: i.attention_weights.mT.contiguous().mT),
        r"attention_weights must be contiguous",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_inputs_fail_naming_the_argument(case: str) -> None:
    corrupt, message = BAD_INPUTS[case]
    inputs = corrupt(random_inputs(**SMALL))
    with pytest.raises(RuntimeError, match=message):
        op(*inputs)


def test_backward_checks_grad_output() -> None:
    inputs = random_inputs(**SMALL)
    with pytest.raises(RuntimeError, match=r"grad_output must be \(N, queries, heads \* channels\)"):
        torch.ops.prolab.ms_deform_attn_backward(op(*inputs)[:, :1], *inputs)
