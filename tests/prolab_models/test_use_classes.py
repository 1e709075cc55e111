"""``use_classes``: a trained property model scores another class list without retraining."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import prolab_models.register  # noqa: F401  (registers the modules)
from data.demo import DEMO_CLASSES
from prolab_models.errors import LabelSpaceMismatchError
from tasks.model.runs import build_config
from tests.helpers.demo_runs import tiny_options
from tests.helpers.label_space_factory import make_label_space


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    space = make_label_space(tmp_path_factory.mktemp("ls") / "ls", DEMO_CLASSES, k=8, dim=16, key="swap-ls")
    cfg = build_config("demo", space, tmp_path_factory.mktemp("work"), None, tiny_options(2))
    init_default_scope("mmseg")
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


def infer(model: torch.nn.Module, image: torch.Tensor) -> SegDataSample:
    sample = SegDataSample(gt_sem_seg=PixelData(data=torch.zeros(1, 48, 64, dtype=torch.long)))
    sample.set_metainfo(dict(img_shape=(48, 64), ori_shape=(48, 64)))
    with torch.no_grad():
        return model.test_step({"inputs": [image], "data_samples": [sample]})[0]


def test_a_new_class_matrix_is_scored_with_the_same_properties(model: torch.nn.Module) -> None:
    image = torch.randint(0, 255, (3, 48, 64), dtype=torch.uint8)
    trained = model.decode_head.multi_hot.clone()
    before = infer(model, image)
    # the trained rows in another order, then a copy of row 2 and a new row
    order = [3, 1, 0, 2, 6, 5, 4]
    new_row = torch.zeros(1, trained.shape[1])
    new_row[0, :2] = 1
    rows = torch.cat([trained[order], trained[2:3], new_row])
    try:
        model.use_classes(rows)
        after = infer(model, image)
        assert model.num_classes == model.decode_head.num_classes == model.auxiliary_head.num_classes == 9
        torch.testing.assert_close(model.auxiliary_head.multi_hot, rows)
        assert after.seg_logits.data.shape[0] == 9
        torch.testing.assert_close(after.pred_properties.data, before.pred_properties.data)  # the same properties
        torch.testing.assert_close(after.seg_logits.data[:7], before.seg_logits.data[order])
        torch.testing.assert_close(after.seg_logits.data[7], before.seg_logits.data[2])  # a copied row scores alike
        expected = torch.cat([before.seg_logits.data[order], before.seg_logits.data[2:3],
                              after.seg_logits.data[8:]]).argmax(0)
        assert torch.equal(after.pred_sem_seg.data[0], expected)
    finally:
        model.use_classes(trained)
    assert torch.equal(infer(model, image).pred_sem_seg.data, before.pred_sem_seg.data)


def test_the_weights_keep_the_label_space_they_were_trained_with(model: torch.nn.Module) -> None:
    trained = model.decode_head.multi_hot.clone()
    try:
        model.use_classes(trained[:3])
        state = model.state_dict()
        assert b"swap-ls" in bytes(state["decode_head._extra_state"].tolist())
        assert torch.equal(state["decode_head.centres"], model.decode_head.centres)
    finally:
        model.use_classes(trained)


@pytest.mark.parametrize("rows", [np.ones((3, 5), np.float32), np.ones((0, 8), np.float32), np.ones(8, np.float32)])
def test_a_class_matrix_over_other_properties_is_refused(model: torch.nn.Module, rows: np.ndarray) -> None:
    with pytest.raises(LabelSpaceMismatchError, match="does not fit 8 trained properties"):
        model.use_classes(torch.from_numpy(rows))
    assert model.num_classes == 7
