"""The fused CPU kernel prolab::property_cosine against its composite reference, its gradient,
its input checks and its torch.library registration."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import csrc
from csrc import property_cosine_reference

pytestmark = pytest.mark.usefixtures("extension")

IGNORE = 255


def random_problem(
    batch: int = 2, properties: int = 5, classes: int = 4, size: tuple[int, int] = (3, 11),
    out_height: int = 9, *, dtype: torch.dtype = torch.float64, seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """rows (N, K, h, W) with logits / T-sized values (saturated and unsaturated sigmoids), a
    sparse normalised multi-hot with one all-zero class, labels with an ignored band. W = 11
    is not a multiple of the vector width, so the tail path runs."""
    generator = torch.Generator().manual_seed(seed)
    rows = (4 * torch.randn(batch, properties, *size, generator=generator, dtype=torch.float64)).to(dtype)
    multi_hot = (torch.rand(classes, properties, generator=generator) > 0.6).double()
    multi_hot[0] = 0.0
    multi_hot[1, 0] = 1.0
    label = torch.randint(0, classes, (batch, out_height, size[1]), generator=generator)
    label[:, :2] = IGNORE
    return rows.requires_grad_(), F.normalize(multi_hot, dim=1).to(dtype), label


def op(rows: torch.Tensor, multi_hot: torch.Tensor, label: torch.Tensor, out_height: int,
       align_corners: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.ops.prolab.property_cosine(rows, multi_hot, label, out_height, align_corners, IGNORE)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_the_reference_with_its_gradient(align_corners: bool, dtype: torch.dtype) -> None:
    rows, multi_hot, label = random_problem(dtype=dtype)
    got = op(rows, multi_hot, label, 9, align_corners)
    expected = property_cosine_reference(rows, multi_hot, label, 9, align_corners, IGNORE)
    tolerance = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[0], expected[0], **tolerance)
    torch.testing.assert_close(got[1], expected[1], **tolerance)
    assert torch.equal(got[2], expected[2])
    assert not got[0][:, :2].any()  # ignored pixels score 0
    grad_output = torch.randn(label.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    (grad_got,) = torch.autograd.grad(got[0], rows, grad_output)
    (grad_expected,) = torch.autograd.grad(expected[0], rows, grad_output)
    torch.testing.assert_close(grad_got, grad_expected, **tolerance)


def test_gradcheck_float64() -> None:
    rows, multi_hot, label = random_problem(size=(4, 10), out_height=7, seed=3)
    rows = (rows.detach() / 4).requires_grad_()  # away from saturation, where differences vanish
    assert torch.autograd.gradcheck(lambda r: op(r, multi_hot, label, 7)[0], (rows,))


def test_two_resizes_give_one_bilinear_upsampling() -> None:
    """The heads resize logits to the label's width and the kernel does the height: together
    PyTorch's bilinear upsampling of (h, w) to (H, W), which interpolates width then height."""
    logits = torch.randn(2, 6, 16, 12, dtype=torch.float64)
    multi_hot = F.normalize(torch.rand(3, 6, dtype=torch.float64), dim=1)
    label = torch.randint(0, 3, (2, 64, 48))
    for align_corners in (False, True):
        rows = F.interpolate(logits, size=(16, 48), mode="bilinear", align_corners=align_corners)
        cosine, norm, _ = op(rows, multi_hot, label, 64, align_corners)
        properties = torch.sigmoid(F.interpolate(logits, size=(64, 48), mode="bilinear", align_corners=align_corners))
        rows_of_labels = multi_hot[label].permute(0, 3, 1, 2)
        expected = F.cosine_similarity(properties, rows_of_labels, dim=1, eps=0)
        torch.testing.assert_close(cosine, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(norm, properties.norm(dim=1), rtol=1e-12, atol=1e-12)


def test_results_do_not_depend_on_thread_count() -> None:
    """Forward rows and backward property blocks each have one writer."""
    rows, multi_hot, label = random_problem(batch=3, properties=20, size=(8, 40), out_height=32, dtype=torch.float32)

    def run() -> tuple[torch.Tensor, ...]:
        cosine, norm, prediction = op(rows, multi_hot, label, 32)
        return (cosine, norm, prediction, *torch.autograd.grad(cosine.sum(), rows))

    threads = torch.get_num_threads()
    many = run()
    torch.set_num_threads(1)
    try:
        one = run()
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(many, one))


def test_opcheck_schema_fake_and_autograd_registrations() -> None:
    rows, multi_hot, label = random_problem()
    torch.library.opcheck(torch.ops.prolab.property_cosine.default, (rows, multi_hot, label, 9, False, IGNORE))


def test_public_function_runs_the_kernel_and_the_reference_elsewhere() -> None:
    """float16 has no kernel: the same call takes the reference and agrees with it."""
    rows, multi_hot, label = random_problem(dtype=torch.float32)
    cosine, prediction = csrc.property_cosine(rows, multi_hot, label, 9, False, IGNORE)
    kernel = op(rows, multi_hot, label, 9)
    assert torch.equal(cosine, kernel[0]) and torch.equal(prediction, kernel[2])
    assert cosine.grad_fn is not None and "prolab" in type(cosine.grad_fn).__name__.lower()
    half = csrc.property_cosine(rows.detach().bfloat16(), multi_hot, label, 9, False, IGNORE)[0]
    torch.testing.assert_close(half.float(), cosine.detach(), atol=2e-2, rtol=0)


BAD_INPUTS = {
    "label out of range": (lambda r, m, l: (r, m, l.masked_fill(l == 1, 7)), "label value 7 is outside \\[0, 4\\)"),
    "label of the wrong size": (lambda r, m, l: (r, m, l[:, :, :5].contiguous()), "label must be \\(N, out_height, W\\)"),
    "label not int64": (lambda r, m, l: (r, m, l.int()), "label must be int64"),
    "multi_hot with the wrong K": (lambda r, m, l: (r, m[:, :3].contiguous(), l), "multi_hot must be \\(C, K\\)"),
    "multi_hot of another dtype": (lambda r, m, l: (r, m.float(), l), "multi_hot must have rows' dtype"),
    "rows not contiguous": (lambda r, m, l: (r.transpose(2, 3).contiguous().transpose(2, 3), m, l),
                            "inputs must be contiguous"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_inputs_fail_naming_the_argument(case: str) -> None:
    change, message = BAD_INPUTS[case]
    rows, multi_hot, label = change(*random_problem())
    with pytest.raises(RuntimeError, match=message):
        op(rows.detach(), multi_hot, label, 9)
