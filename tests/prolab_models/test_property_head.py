"""Property heads, the cosine loss and class decoding (method.md section 4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import prolab_models.register  # noqa: F401  (registers the modules)
from prolab_models.errors import LabelSpaceMismatchError
from prolab_models.losses import PropertyCosineLoss
from tests.helpers.label_space_factory import make_label_space

CLASSES = ["sky", "road", "car"]
MULTI_HOT = np.array([[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 1, 0, 1, 1]], dtype=np.float32)


@pytest.fixture
def label_space(tmp_path: Path) -> Path:
    return make_label_space(tmp_path / "ls", CLASSES, dim=12, multi_hot=MULTI_HOT, key="ls-a")


def uper(label_space: Path | None, **kwargs) -> torch.nn.Module:
    return MODELS.build(dict(type="PropertyUPerHead", label_space=label_space and str(label_space), in_channels=[8, 8, 8, 8],
                             in_index=[0, 1, 2, 3], channels=8, norm_cfg=dict(type="BN"),
                             loss_decode=dict(type="PropertyCosineLoss"), **kwargs))


def features(n: int = 2) -> list[torch.Tensor]:
    return [torch.randn(n, 8, 16 // 2**i, 16 // 2**i) for i in range(4)]


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
    label = torch.randint(0, 3, (2, 30, 22))
    label[:, :3] = 255
    logits = torch.randn(2, 5, 8, 6, requires_grad=True)
    losses = head.loss_by_feat(logits, [sample(label[0]), sample(label[1])])
    scores = head.class_scores(head.properties_at(logits, (30, 22)))
    valid = label != 255
    cosine = scores.gather(1, torch.where(valid, label, 0)[:, None]).squeeze(1)
    expected = ((1 - cosine) * valid).sum() / valid.sum()
    torch.testing.assert_close(losses["loss_prop"], expected)
    accuracy = ((scores.argmax(1) == label) & valid).sum() / valid.sum() * 100
    torch.testing.assert_close(losses["acc_seg"], accuracy.reshape(1))
    grads = [torch.autograd.grad(value, logits)[0] for value in (losses["loss_prop"], expected)]
    torch.testing.assert_close(grads[0], grads[1])


def test_k_properties_drive_a_head_with_k_outputs(tmp_path: Path) -> None:
    space = make_label_space(tmp_path / "ls", CLASSES, k=7, dim=10)
    head = uper(space)
    assert head.conv_seg.out_channels == 10  # the D-dim embedding
    logits = head(features())
    assert logits.shape == (2, 7, 16, 16)  # K property logits
    assert head.num_classes == 3 and head.num_properties == 7
    trainable = {n for n, _ in head.named_parameters()}
    assert "centres" not in trainable and "multi_hot" not in trainable
    assert {"centres", "multi_hot"} <= {n for n, _ in head.named_buffers()}


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


def test_loss_and_gradients_of_the_head(label_space: Path) -> None:
    head = uper(label_space)
    label = torch.randint(0, 3, (16, 16))
    label[:2] = 255
    losses = head.loss(features(2), [sample(label), sample(label)], train_cfg={})
    assert set(losses) == {"loss_prop", "acc_seg"}
    assert 0.0 <= losses["loss_prop"].item() <= 1.0
    losses["loss_prop"].backward()
    assert head.conv_seg.weight.grad.abs().sum() > 0


def test_predict_returns_class_scores_at_the_input_size(label_space: Path) -> None:
    head = uper(label_space).eval()
    metas = [dict(img_shape=(64, 64), pad_shape=(64, 64))]
    assert head.predict(features(1), metas, test_cfg={}).shape == (1, 3, 64, 64)
    both = head.predict_properties(features(1), metas, test_cfg={})
    assert both.shape == (1, 3 + 5, 64, 64)
    assert ((both[:, 3:] >= 0) & (both[:, 3:] <= 1)).all()


def test_fcn_head_is_a_property_head_too(label_space: Path) -> None:
    head = MODELS.build(dict(type="PropertyFCNHead", label_space=str(label_space), in_channels=8, in_index=2,
                             channels=4, num_convs=1, concat_input=False, norm_cfg=dict(type="BN"),
                             loss_decode=dict(type="PropertyCosineLoss", loss_weight=0.4)))
    assert head(features()).shape == (2, 5, 4, 4)


def test_missing_label_space_and_wrong_num_classes_are_refused(label_space: Path) -> None:
    with pytest.raises(LabelSpaceMismatchError, match="label_space is not set"):
        uper(None)
    with pytest.raises(LabelSpaceMismatchError, match="num_classes=4 but label space .* has 3 classes"):
        uper(label_space, num_classes=4)


def test_weights_of_another_label_space_are_refused(label_space: Path, tmp_path: Path) -> None:
    other = make_label_space(tmp_path / "other", CLASSES, dim=12, multi_hot=MULTI_HOT, key="ls-b")
    state = uper(other).state_dict()
    with pytest.raises(LabelSpaceMismatchError, match="trained with label space 'ls-b'"):
        uper(label_space).load_state_dict(state)
    uper(label_space).load_state_dict(uper(label_space).state_dict())  # same key: fine


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
