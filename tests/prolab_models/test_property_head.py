"""Property heads, the cosine loss and class decoding (method.md section 4).

The mixin's arithmetic is tested once, on the UPerNet head; what could differ between heads
(shapes, the loss and scores on each head's own output, mmseg's inference and metric, the label
space check) is tested for every registered ``Property*`` head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.evaluation import IoUMetric
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import prolab_models.register  # noqa: F401  (registers the modules)
from prolab_models.errors import LabelSpaceMismatchError
from prolab_models.losses import PropertyClassLoss, PropertyCosineLoss
from tests.helpers.label_space_factory import make_label_space

CLASSES = ["sky", "road", "car"]
MULTI_HOT = np.array([[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 1, 0, 1, 1]], dtype=np.float32)


@pytest.fixture
def label_space(tmp_path: Path) -> Path:
    return make_label_space(tmp_path / "ls", CLASSES, dim=12, multi_hot=MULTI_HOT, key="ls-a")


def uper(label_space: Path | None, **kwargs) -> torch.nn.Module:
    kwargs.setdefault("loss_decode", dict(type="PropertyCosineLoss"))
    return MODELS.build(dict(type="PropertyUPerHead", label_space=label_space and str(label_space), in_channels=[8, 8, 8, 8],
                             in_index=[0, 1, 2, 3], channels=8, norm_cfg=dict(type="BN"), **kwargs))


def features(n: int = 2) -> list[torch.Tensor]:
    return [torch.randn(n, 8, 16 // 2**i, 16 // 2**i) for i in range(4)]


# Every Property* head as a config builds it, on the maps of a dilated ("D8") 4-stage backbone
# as mmseg's DeepLab and LRASPP configs use (the channels below at strides 4, 8, 8, 8): its own
# mmseg settings, the input size it is fed, and the stride of its logits. mmseg's LRASPP pools
# 49x49 windows of its last map, so it needs 8 x 49 = 392 pixels.
CHANNELS, STRIDES = (8, 16, 32, 64), (4, 8, 8, 8)
HEADS: dict[str, tuple[dict, int, int]] = {
    "PropertyUPerHead": (dict(in_channels=list(CHANNELS), in_index=[0, 1, 2, 3], pool_scales=(1, 2), channels=8),
                         64, 4),
    "PropertyFCNHead": (dict(in_channels=32, in_index=2, channels=8, num_convs=1, concat_input=False), 64, 8),
    "PropertyASPPHead": (dict(in_channels=64, in_index=3, channels=8, dilations=(1, 2)), 64, 8),
    "PropertyDepthwiseSeparableASPPHead": (dict(in_channels=64, in_index=3, channels=8, dilations=(1, 2),
                                                c1_in_channels=8, c1_channels=4), 64, 4),
    "PropertySegformerHead": (dict(in_channels=list(CHANNELS), in_index=[0, 1, 2, 3], channels=8), 64, 4),
    "PropertyLRASPPHead": (dict(in_channels=(8, 16, 64), in_index=(0, 1, 3), input_transform="multiple_select",
                                channels=8, branch_channels=(4, 4)), 392, 4),
}


def head(name: str, label_space: Path | None, **kwargs) -> torch.nn.Module:
    settings = HEADS[name][0]
    return MODELS.build(dict(type=name, label_space=label_space and str(label_space), norm_cfg=dict(type="BN"),
                             loss_decode=dict(type="PropertyCosineLoss"), **settings, **kwargs))


def backbone_maps(size: int, n: int = 2) -> list[torch.Tensor]:
    return [torch.randn(n, c, size // s, size // s) for c, s in zip(CHANNELS, STRIDES)]


def properties_by_definition(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """p = sigmoid(z / T) of the logits upsampled as mmseg upsamples class logits."""
    return torch.sigmoid(F.interpolate(logits, size, mode="bilinear", align_corners=False) / 0.04)


def sample(label: torch.Tensor) -> SegDataSample:
    s = SegDataSample(gt_sem_seg=PixelData(data=label[None]))
    s.set_metainfo(dict(img_shape=label.shape, pad_shape=label.shape, ori_shape=label.shape))
    return s


def test_perfect_prediction_gives_zero_loss(label_space: Path) -> None:
    """Logits of +-10 / T saturate the sigmoid: p is each pixel's class row exactly."""
    label = torch.tensor([[0, 1], [2, 255]])
    logits = (torch.from_numpy(MULTI_HOT)[label.clamp(max=2)].permute(2, 0, 1)[None] * 2 - 1) * 10
    losses = uper(label_space).loss_by_feat(logits, [sample(label)])
    assert losses["loss_prop"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["acc_seg"].item() == pytest.approx(100.0)


def test_loss_is_one_minus_cosine_averaged_over_valid_pixels() -> None:
    cosine = torch.tensor([[[0.5, 0.0, 0.9]]])
    label = torch.tensor([[[0, 0, 255]]])  # the third pixel is ignored
    loss = PropertyCosineLoss(loss_weight=0.4)(cosine, label)
    assert loss.item() == pytest.approx(0.4 * ((1 - 0.5) + (1 - 0.0)) / 2)


def test_all_ignored_gives_zero_with_a_graph() -> None:
    cosine = torch.rand(1, 2, 2, requires_grad=True)
    loss = PropertyCosineLoss()(cosine, torch.full((1, 2, 2), 255))
    loss.backward()
    assert loss.item() == 0.0 and cosine.grad is not None


def test_fused_loss_is_the_definition(label_space: Path) -> None:
    """loss_by_feat (fused kernel) equals 1 - cos(p, m_label) computed from the head's own
    properties_at and class_scores (the inference path), with the same gradient."""
    head = uper(label_space)
    generator = torch.Generator().manual_seed(0)
    label = torch.randint(0, 3, (2, 30, 22), generator=generator)
    label[:, :3] = 255
    logits = torch.randn(2, 5, 8, 6, generator=generator).requires_grad_()
    losses = head.loss_by_feat(logits, [sample(label[0]), sample(label[1])])
    scores = head.class_scores(head.properties_at(logits, (30, 22)))
    valid = label != 255
    cosine = scores.gather(1, torch.where(valid, label, 0)[:, None]).squeeze(1)
    expected = ((1 - cosine) * valid).sum() / valid.sum()
    torch.testing.assert_close(losses["loss_prop"], expected)
    accuracy = ((scores.argmax(1) == label) & valid).sum() / valid.sum() * 100
    # the kernel's and the composite's arithmetic differ in the last bits, so a near-tie between
    # two classes' cosines may go either way: one pixel's worth of accuracy (unseeded, it did)
    one_pixel = 100 / valid.sum().item()
    torch.testing.assert_close(losses["acc_seg"], accuracy.reshape(1), atol=one_pixel + 1e-4, rtol=0)
    grads = [torch.autograd.grad(value, logits)[0] for value in (losses["loss_prop"], expected)]
    torch.testing.assert_close(grads[0], grads[1])


def test_class_term_is_cross_entropy_over_cosine_scores(label_space: Path) -> None:
    """With ``PropertyClassLoss`` beside the cosine loss, the head adds CE(cos(p, m_c) / t) with p
    and the scores taken on the logits' grid and the scores upsampled; the cosine loss is unchanged."""
    both = [dict(type="PropertyCosineLoss"), dict(type="PropertyClassLoss", temperature=0.1, loss_weight=0.5)]
    head = uper(label_space)
    head_with_term = uper(label_space, loss_decode=both)
    label = torch.randint(0, 3, (1, 12, 10))
    label[0, 0] = 255
    logits = torch.randn(1, 5, 6, 5, requires_grad=True)
    losses = head_with_term.loss_by_feat(logits, [sample(label[0])])
    scores = head.class_scores(torch.sigmoid(logits / 0.04))
    scores = F.interpolate(scores, (12, 10), mode="bilinear", align_corners=False)
    expected = 0.5 * F.cross_entropy(scores / 0.1, label, ignore_index=255)
    torch.testing.assert_close(losses["loss_class"], expected)
    torch.testing.assert_close(losses["loss_prop"], head.loss_by_feat(logits, [sample(label[0])])["loss_prop"])
    assert torch.autograd.grad(losses["loss_class"], logits)[0].abs().sum() > 0


def test_class_term_prefers_the_margin_the_cosine_loss_ignores() -> None:
    """Two predictions with the same cosine to their own class: the one nearer another class
    costs more under the class term."""
    label = torch.zeros(1, 1, 1, dtype=torch.long)
    near = torch.tensor([0.9, 0.85])[None, :, None, None]
    apart = torch.tensor([0.9, 0.2])[None, :, None, None]
    loss = PropertyClassLoss()
    assert loss(near, label).item() > loss(apart, label).item()
    assert loss(near, torch.full((1, 1, 1), 255)).item() == 0.0
    with pytest.raises(ValueError, match="temperature"):
        PropertyClassLoss(temperature=0)


def test_logits_are_the_embedding_against_normalised_centres(label_space: Path) -> None:
    head = uper(label_space).eval()
    feat = torch.randn(2, 8, 4, 4)
    embeddings = head.conv_seg(feat)  # (N, D, h, w), not normalised
    centres = torch.nn.functional.normalize(head.centres, dim=1)
    expected = torch.einsum("ndhw,kd->nkhw", embeddings, centres)
    assert torch.allclose(head.cls_seg(feat), expected, atol=1e-5)
    properties = head.properties_at(expected, (4, 4))
    assert torch.allclose(properties, torch.sigmoid(expected / 0.04), atol=1e-5)


def test_classes_decode_from_their_property_rows(label_space: Path) -> None:
    head = uper(label_space)
    rows = torch.from_numpy(MULTI_HOT)  # each class's own property set as the prediction
    scores = head.class_scores(rows.T.reshape(1, 5, 1, 3))
    assert scores.argmax(1).flatten().tolist() == [0, 1, 2]
    assert scores[0, :, 0, 0].tolist() == pytest.approx([1.0, 0.0, 1 / np.sqrt(6)])  # (1,1,0,0,0) vs (0,1,0,1,1)




def test_predict_returns_class_scores_at_the_input_size(label_space: Path) -> None:
    head = uper(label_space).eval()
    metas = [dict(img_shape=(64, 64), pad_shape=(64, 64))]
    assert head.predict(features(1), metas, test_cfg={}).shape == (1, 3, 64, 64)
    both = head.predict_properties(features(1), metas, test_cfg={})
    assert both.shape == (1, 3 + 5, 64, 64)
    assert ((both[:, 3:] >= 0) & (both[:, 3:] <= 1)).all()








def test_segmentor_returns_classes_and_properties(label_space: Path) -> None:
    init_default_scope("mmseg")  # the preprocessor is built by name inside the segmentor
    model = MODELS.build(dict(
        type="PropertyEncoderDecoder",
        data_preprocessor=dict(type="SegDataPreProcessor", mean=[0, 0, 0], std=[1, 1, 1]),
        backbone=dict(type="ViTAdapter", arch="tiny", embed_dim=48, depth=2, interaction_indexes=[[0, 0], [1, 1]],
                      norm_cfg=dict(type="BN")),
        decode_head=dict(type="PropertyUPerHead", label_space=str(label_space), in_channels=[48] * 4,
                         in_index=[0, 1, 2, 3], channels=8, norm_cfg=dict(type="BN"),
                         loss_decode=dict(type="PropertyCosineLoss")),
        test_cfg=ConfigDict(mode="slide", crop_size=(64, 64), stride=(32, 32)),
    )).eval()
    meta = dict(img_shape=(64, 96), ori_shape=(64, 96), pad_shape=(64, 96), padding_size=[0, 0, 0, 0])
    data_sample = SegDataSample(metainfo=meta)
    with torch.no_grad():
        out = model.predict(torch.randn(1, 3, 64, 96), [data_sample])[0]
    assert out.seg_logits.data.shape == (3, 64, 96)
    assert out.pred_properties.data.shape == (5, 64, 96)
    assert torch.equal(out.pred_sem_seg.data, out.seg_logits.data.argmax(0, keepdim=True))


@pytest.mark.parametrize("name", HEADS)
def test_head_outputs_k_property_logits_from_a_d_dim_embedding(name: str, tmp_path: Path) -> None:
    space = make_label_space(tmp_path / "ls", CLASSES, k=7, dim=10)
    module = head(name, space)
    size, stride = HEADS[name][1:]
    assert module.conv_seg.out_channels == 10  # the D-dim embedding
    assert module(backbone_maps(size)).shape == (2, 7, size // stride, size // stride)  # K property logits
    assert module.num_classes == 3 and module.num_properties == 7
    assert {"centres", "multi_hot"} <= {n for n, _ in module.named_buffers()}
    assert not {"centres", "multi_hot"} & {n for n, _ in module.named_parameters()}


@pytest.mark.parametrize("name", HEADS)
def test_head_loss_is_one_minus_the_cosine_of_its_properties_and_the_label_row(name: str, label_space: Path) -> None:
    """The head's training loss (the fused kernel) against 1 - cos(p, m_label) written out from
    its own forward pass, with the same gradient on the embedding layer."""
    module = head(name, label_space).train()
    size = HEADS[name][1]
    maps = backbone_maps(size)
    label = torch.randint(0, 3, (2, size, size))
    label[:, : size // 8] = 255
    torch.manual_seed(0)  # the same dropout mask in both passes
    loss = module.loss(maps, [sample(label[0]), sample(label[1])], train_cfg={})["loss_prop"]
    torch.manual_seed(0)
    properties = properties_by_definition(module(maps), (size, size))
    valid = label != 255
    rows = torch.from_numpy(MULTI_HOT)[torch.where(valid, label, 0)].permute(0, 3, 1, 2)
    cosine = F.cosine_similarity(properties, rows, dim=1)
    expected = ((1 - cosine) * valid).sum() / valid.sum()
    torch.testing.assert_close(loss, expected)
    grads = [torch.autograd.grad(value, module.conv_seg.weight)[0] for value in (loss, expected)]
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("name", HEADS)
def test_head_scores_each_class_by_the_cosine_of_its_multi_hot_row(name: str, label_space: Path) -> None:
    module = head(name, label_space).eval()
    size = HEADS[name][1]
    maps = backbone_maps(size, n=1)
    metas = [dict(img_shape=(size, size), pad_shape=(size, size))]
    with torch.no_grad():
        scores = module.predict(maps, metas, test_cfg={})
        properties = properties_by_definition(module(maps), (size, size))
    rows = torch.from_numpy(MULTI_HOT)[None, :, :, None, None]  # (1, C, K, 1, 1)
    expected = F.cosine_similarity(properties[:, None], rows, dim=2)
    assert scores.shape == (1, 3, size, size)
    torch.testing.assert_close(scores, expected)


def segmentor(kind: str, name: str, label_space: Path) -> torch.nn.Module:
    """mmseg's EncoderDecoder (or ours) on a thin ResNet-18-D8 whose stages give ``CHANNELS``."""
    return MODELS.build(dict(
        type=kind,
        data_preprocessor=dict(type="SegDataPreProcessor", mean=[0, 0, 0], std=[1, 1, 1]),
        backbone=dict(type="ResNetV1c", depth=18, stem_channels=8, base_channels=8, strides=(1, 2, 1, 1),
                      dilations=(1, 1, 2, 4), norm_cfg=dict(type="BN")),
        decode_head=dict(type=name, label_space=str(label_space), norm_cfg=dict(type="BN"),
                         loss_decode=dict(type="PropertyCosineLoss"), **HEADS[name][0]),
        test_cfg=ConfigDict(mode="whole"))).eval()


@pytest.mark.parametrize("name", HEADS)
def test_mmseg_inference_and_iou_metric_run_unchanged_on_a_property_head(name: str, label_space: Path) -> None:
    """A property head in mmseg's own EncoderDecoder: class scores come out of mmseg's inference,
    IoUMetric scores them as it scores any model; PropertyEncoderDecoder predicts the same classes
    and adds the properties."""
    init_default_scope("mmseg")
    size = HEADS[name][1]
    plain = segmentor("EncoderDecoder", name, label_space)
    ours = segmentor("PropertyEncoderDecoder", name, label_space)
    ours.load_state_dict(plain.state_dict())
    label = torch.randint(0, 3, (size, size))
    data = {"inputs": [torch.randint(0, 256, (3, size, size), dtype=torch.uint8)], "data_samples": [sample(label)]}
    with torch.no_grad():
        out = plain.test_step(data)[0]
        both = ours.test_step(data)[0]
    assert out.seg_logits.data.shape == (3, size, size)
    torch.testing.assert_close(both.seg_logits.data, out.seg_logits.data)
    assert torch.equal(both.pred_sem_seg.data, out.pred_sem_seg.data)
    assert both.pred_properties.data.shape == (5, size, size)

    metric = IoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = {"classes": CLASSES}
    metric.process({}, [out.to_dict()])
    prediction = out.pred_sem_seg.data[0]
    ious = [((prediction == c) & (label == c)).sum() / ((prediction == c) | (label == c)).sum() for c in range(3)]
    assert metric.compute_metrics(metric.results)["mIoU"] == pytest.approx(100 * np.nanmean(ious), abs=0.01)


@pytest.mark.parametrize("name", HEADS)
def test_head_without_a_fitting_label_space_is_refused(name: str, label_space: Path) -> None:
    with pytest.raises(LabelSpaceMismatchError, match=f"{name}: label_space is not set"):
        head(name, None)
    with pytest.raises(LabelSpaceMismatchError, match="num_classes=4 but label space .* has 3 classes"):
        head(name, label_space, num_classes=4)


@pytest.mark.parametrize("name", HEADS)
def test_head_refuses_weights_of_another_label_space(name: str, label_space: Path, tmp_path: Path) -> None:
    other = make_label_space(tmp_path / "other", CLASSES, dim=12, multi_hot=MULTI_HOT, key="ls-b")
    state = head(name, other).state_dict()
    with pytest.raises(LabelSpaceMismatchError, match="trained with label space 'ls-b'"):
        head(name, label_space).load_state_dict(state)
    head(name, label_space).load_state_dict(head(name, label_space).state_dict())  # same key: fine
