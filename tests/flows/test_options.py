"""The command line's ``KEY=VALUE`` options read as mmengine's ``DictAction`` reads them: the same
values, so the same run keys as mmseg's tools, without importing mmengine."""

from __future__ import annotations

import argparse

import pytest
from mmengine.config import DictAction

from flows.options import parse_key_values

CASES = [
    "train_cfg.max_iters=2", "optim_wrapper.optimizer.lr=6e-05", "model.pretrained=None", "flag=True", "off=false",
    "name=demo", "quoted='a b'", "lists=1,2,3", "bracketed=[a, b, c]", "tuple=(1,2)", "empty=[]", "empty_tuple=()",
    "nested=[(1, 2, 3), [a, b], c]", "indexes=[[0,0],[1,1]]", "trailing=1,2,", "gap=1,,2", "one=[7]",
    "hooks=[dict(type=PreciseBNHook)]", "key=a=b", "minus=-3", "text=1e", "path=/data/camvid",
]


def test_key_values_are_read_as_mmengines_dict_action_reads_them() -> None:
    reference = argparse.Namespace()
    DictAction(["--cfg-options"], "cfg_options", nargs="+")(argparse.ArgumentParser(), reference, CASES)
    ours = parse_key_values(CASES)
    assert ours == reference.cfg_options
    assert {k: type(v) for k, v in ours.items()} == {k: type(v) for k, v in reference.cfg_options.items()}


@pytest.mark.parametrize("item, expected", [("max_iters", "expected KEY=VALUE"), ("=3", "expected KEY=VALUE"),
                                            ("x=[1,2", "unbalanced brackets")])
def test_a_malformed_item_is_named(item: str, expected: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=expected):
        parse_key_values([item])


def test_predict_gives_the_runs_own_config_as_its_default_where_train_gives_the_models() -> None:
    from flows.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    predict, train = (" ".join(commands[name].format_help().split()) for name in ("predict", "train"))
    assert "--config CONFIG a config name (demo, camvid, ade20k, ...) or a path (default: the run's own)" in predict
    assert "(default: demo)" not in predict and "or a path (default: demo)" in train
    assert "--cfg-options KEY=VALUE [KEY=VALUE ...] mmengine config overrides, as mmseg's --cfg-options: " \
           "train_cfg.max_iters=400 on the command line" in train


def test_only_train_takes_the_process_layout_and_the_layout_is_trains() -> None:
    from flows.cli import build_parser
    from tasks.params import PROCESS_LAYOUT, TrainParams

    assert set(PROCESS_LAYOUT) <= set(TrainParams.model_fields)
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    helps = {name: commands[name].format_help() for name in ("train", "evaluate", "predict")}
    for option in ("--nproc-per-node", "--nnodes", "--launcher"):
        assert option in helps["train"] and option not in helps["evaluate"] and option not in helps["predict"]
