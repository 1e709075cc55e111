"""Loading the compiled ops library and giving its ops autograd and fake kernels.

The library (built by ``python -m csrc.build``) defines ``torch.ops.prolab.ms_deform_attn``,
``torch.ops.prolab.property_cosine`` and their ``*_backward`` ops in C++. It is loaded only when its build
stamp says it was compiled from the current sources for the running torch: a stale library
either fails to load with undefined symbols or runs out-of-date kernels. The fake kernels
and the autograd formula registered here let ``torch.compile`` trace the op without graph
breaks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

CSRC_DIR = Path(__file__).resolve().parent
BUILD_DIRNAME = "build"
STAMP_NAME = "stamp.json"
SOURCES = ("msda.h", "msda.cpp", "msda_cuda.cu", "property_cosine.cpp")


@dataclass(frozen=True)
class BuildStamp:
    """What a build produced and from what; written last, so a failed build leaves none."""

    torch_version: str
    sources_digest: str
    flags: tuple[str, ...]
    cuda: bool
    cuda_reason: str
    library: str  # file name inside the csrc directory

    @staticmethod
    def path(csrc_dir: Path = CSRC_DIR) -> Path:
        return csrc_dir / BUILD_DIRNAME / STAMP_NAME

    @classmethod
    def read(cls, csrc_dir: Path = CSRC_DIR) -> BuildStamp | None:
        """The stamp of the last successful build, or None if there is none (or it is unreadable)."""
        try:
            fields = json.loads(cls.path(csrc_dir).read_text())
            return cls(**{**fields, "flags": tuple(fields["flags"])})
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def write(self, csrc_dir: Path = CSRC_DIR) -> None:
        path = self.path(csrc_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


@dataclass(frozen=True)
class ExtensionInfo:
    """Which kernels the ops in ``csrc`` can run, and why."""

    loaded: bool
    cpu: bool
    cuda: bool
    detail: str  # the library loaded, or why none was
    cuda_detail: str  # why the CUDA kernel was or was not built


def sources_digest(csrc_dir: Path = CSRC_DIR) -> str:
    """SHA-256 over the C++/CUDA sources: any edit makes the built library stale."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update(name.encode())
        digest.update((csrc_dir / name).read_bytes())
    return digest.hexdigest()


def stale_reason(stamp: BuildStamp | None, csrc_dir: Path = CSRC_DIR) -> str | None:
    """Why the built library must not be loaded, or None when it is current."""
    if stamp is None:
        return "not built (run `python -m csrc.build`)"
    if stamp.torch_version != torch.__version__:
        return f"built for torch {stamp.torch_version}, running {torch.__version__} (rebuild: `python -m csrc.build`)"
    if stamp.sources_digest != sources_digest(csrc_dir):
        return "sources changed since the last build (rebuild: `python -m csrc.build`)"
    if any("-mavx2" in flags for flags in stamp.flags) and torch.backends.cpu.get_cpu_capability() not in (
        "AVX2", "AVX512"
    ):
        return "built with AVX2 code, which this CPU cannot run (rebuild: `python -m csrc.build`)"
    if not (csrc_dir / stamp.library).is_file():
        return f"{stamp.library} is missing (rebuild: `python -m csrc.build`)"
    return None


_loaded: ExtensionInfo | None = None


def load(csrc_dir: Path = CSRC_DIR) -> ExtensionInfo:
    """Load the built library once per process, or say why it cannot be used.

    A process can hold only one library defining the ``prolab`` namespace, so once one is
    loaded later calls return its info unchanged.
    """
    global _loaded
    if _loaded is not None:
        return _loaded
    stamp = BuildStamp.read(csrc_dir)
    reason = stale_reason(stamp, csrc_dir)
    if stamp is None or reason is not None:
        return ExtensionInfo(False, False, False, reason or "", "")
    library = csrc_dir / stamp.library
    try:
        torch.ops.load_library(str(library))
    except (OSError, RuntimeError) as error:
        return ExtensionInfo(False, False, False, f"{library} failed to load: {error}", stamp.cuda_reason)
    _register_python_kernels()
    _loaded = ExtensionInfo(True, True, stamp.cuda, str(library), stamp.cuda_reason)
    return _loaded


def _register_python_kernels() -> None:
    torch.library.register_fake("prolab::ms_deform_attn", _fake_forward)
    torch.library.register_fake("prolab::ms_deform_attn_backward", _fake_backward)
    torch.library.register_autograd("prolab::ms_deform_attn", _backward, setup_context=_setup_context)
    torch.library.register_fake("prolab::property_cosine", _fake_property_cosine)
    torch.library.register_fake("prolab::property_cosine_backward", _fake_property_cosine_backward)
    torch.library.register_autograd(
        "prolab::property_cosine", _property_cosine_backward, setup_context=_property_cosine_setup_context
    )


def _fake_forward(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    batch, _, heads, channels = value.shape
    queries = sampling_locations.shape[1]
    return value.new_empty((batch, queries, heads * channels))


def _fake_backward(
    grad_output: torch.Tensor,
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.empty_like(value), torch.empty_like(sampling_locations), torch.empty_like(attention_weights)


def _setup_context(ctx: Any, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None, torch.Tensor, torch.Tensor]:
    # The kernel wants dense rows; a downstream view can hand back a strided gradient.
    grad_value, grad_locations, grad_weights = torch.ops.prolab.ms_deform_attn_backward(
        grad_output.contiguous(), *ctx.saved_tensors
    )
    return grad_value, None, None, grad_locations, grad_weights


def _fake_property_cosine(
    rows: torch.Tensor, multi_hot: torch.Tensor, label: torch.Tensor, out_height: int, align_corners: bool,
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    per_pixel = rows.new_empty(label.shape)
    return per_pixel, torch.empty_like(per_pixel), torch.empty_like(label)


def _fake_property_cosine_backward(
    grad_cosine: torch.Tensor, rows: torch.Tensor, multi_hot: torch.Tensor, label: torch.Tensor,
    cosine: torch.Tensor, norm: torch.Tensor, out_height: int, align_corners: bool, ignore_index: int,
) -> torch.Tensor:
    return torch.empty_like(rows)


def _property_cosine_setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
    rows, multi_hot, label, out_height, align_corners, ignore_index = inputs
    cosine, norm, prediction = output
    ctx.mark_non_differentiable(norm, prediction)
    ctx.save_for_backward(rows, multi_hot, label, cosine, norm)
    ctx.arguments = (out_height, align_corners, ignore_index)


def _property_cosine_backward(
    ctx: Any, grad_cosine: torch.Tensor, grad_norm: torch.Tensor, grad_prediction: torch.Tensor
) -> tuple[torch.Tensor, None, None, None, None, None]:
    """The gradient reaches the logits only: the multi-hot is a buffer, not a parameter."""
    rows, multi_hot, label, cosine, norm = ctx.saved_tensors
    grad_rows = torch.ops.prolab.property_cosine_backward(
        grad_cosine.contiguous(), rows, multi_hot, label, cosine, norm, *ctx.arguments
    )
    return grad_rows, None, None, None, None, None
