"""What a careful, hostile user tries: each case exits non-zero with one clear message naming
what is wrong and where, prints no Python traceback, and loses nothing already computed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from data.demo import DEMO_CLASSES
from tasks.store import ArtifactStore
from tests.helpers.label_space_factory import make_label_space
from tests.reliability.conftest import CITYSCAPES, last_line, prolab
from tests.support import shared_path

Case = tuple[list[str], list[str]]


@pytest.fixture(scope="module")
def env(prefect_server: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One store for every case, holding a label space computed before any bad input."""
    store = tmp_path_factory.mktemp("store")
    env = {**prefect_server, "PROLAB_ARTIFACTS": str(store), "HF_HUB_OFFLINE": "1"}
    last_line(prolab(env, "label-space", "--descriptors", str(shared_path(CITYSCAPES)), "--k", "4"))
    return env


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Hostile inputs on disk: a symlinked directory, a huge file, UTF-16, NaN, broken label spaces."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "a-directory").mkdir()
    (root / "descriptors.json").symlink_to(root / "a-directory")
    with open(root / "huge.json", "wb") as huge:  # sparse: 65 MiB on paper, nothing on disk
        huge.truncate(65 * 1024 * 1024)
    (root / "utf16.json").write_bytes(json.dumps({"car": ["red"]}).encode("utf-16"))
    (root / "nan.json").write_text('{"car": [NaN]}')
    (root / "negative.json").write_text('{"car": [-1]}')
    (root / "store-file").write_text("not a directory")
    missing = make_label_space(root / "missing-file", DEMO_CLASSES, k=4)
    (missing / "class_properties.parquet").unlink()
    truncated = make_label_space(root / "truncated", DEMO_CLASSES, k=4)
    data = (truncated / "properties.parquet").read_bytes()
    (truncated / "properties.parquet").write_bytes(data[: len(data) // 2])
    make_label_space(root / "good", DEMO_CLASSES, k=4)
    (root / "not-a-checkpoint.pth").write_bytes(os.urandom(4096))
    (root / "empty-run").mkdir()
    return root


LABEL_SPACE: dict[str, Case] = {
    "descriptors symlink to a directory": (["--descriptors", "{in}/descriptors.json"],
                                           ["{in}/descriptors.json", "is a directory"]),
    "descriptors over the size bound": (["--descriptors", "{in}/huge.json"], ["{in}/huge.json", "too large"]),
    "UTF-16 descriptors": (["--descriptors", "{in}/utf16.json"], ["{in}/utf16.json", "not UTF-8"]),
    "NaN description": (["--descriptors", "{in}/nan.json"], ['{in}/nan.json: class "car": description 1 is NaN']),
    "negative number as description": (["--descriptors", "{in}/negative.json"],
                                       ['class "car": description 1 is a number']),
    "descriptors outside every root": (["--descriptors", "/etc/hostname"], ["/etc/hostname", "JSON"]),
    "--artifacts is a file": (["--descriptors", CITYSCAPES, "--artifacts", "{in}/store-file"],
                              ["{in}/store-file", "Not a directory"]),
    "--artifacts URL with an unknown protocol": (["--artifacts", "nosuch://bucket/prolab"],
                                                 ["artifact store nosuch://bucket/prolab", "Protocol not known"]),
    "--artifacts URL that cannot be reached": (["--artifacts", "file://{in}/store-file/prolab"],
                                               ["artifact store file://{in}/store-file/prolab", "Not a directory"]),
    "--k nan": (["--k", "nan"], ["--k", "invalid int value: 'nan'"]),
    "--seed -1": (["--seed", "-1"], ["--seed: Input should be greater than or equal to 0"]),
    "--concurrency 0": (["--dataset", "camvid", "--llm", "http://127.0.0.1:9/v1", "--concurrency", "0"],
                        ["--concurrency: Input should be greater than or equal to 1"]),
}

MODEL: dict[str, Case] = {
    "label space outside the store, not a label space": (["train", "--label-space", "/etc"],
                                                         ["/etc", "not a label space"]),
    "label-space dir missing a file": (["train", "--label-space", "{in}/missing-file"],
                                       ["{in}/missing-file", "class_properties.parquet"]),
    "truncated parquet in a label space": (["train", "--label-space", "{in}/truncated"],
                                           ["{in}/truncated/properties.parquet"]),
    "label space from another dataset": (["evaluate", "--label-space", "{cityscapes}", "--checkpoint",
                                          "{in}/not-a-checkpoint.pth"],
                                         ["label space has 19 classes but the dataset ProLabDemoDataset has 7"]),
    "checkpoint that is not one": (["evaluate", "--label-space", "{in}/good", "--checkpoint",
                                    "{in}/not-a-checkpoint.pth"], ["{in}/not-a-checkpoint.pth"]),
    "run directory without a checkpoint": (["evaluate", "--label-space", "{in}/good", "--checkpoint",
                                            "{in}/empty-run"], ["{in}/empty-run", "no checkpoint"]),
}


def _fill(items: list[str], inputs: Path, env: dict[str, str]) -> list[str]:
    cityscapes = next(Path(env["PROLAB_ARTIFACTS"]).glob("cluster/*/"), Path("?"))
    values = {"in": str(inputs), "cityscapes": str(cityscapes)}
    return [str(shared_path(item)) if item == CITYSCAPES else item.format(**values) for item in items]


def _check(env: dict[str, str], args: list[str], expected: list[str]) -> None:
    store = ArtifactStore(env["PROLAB_ARTIFACTS"])
    before = sorted(store.iter_artifacts())
    result = prolab(env, *args)
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for text in expected:
        assert text in result.stderr, f"{text!r} not in:\n{result.stderr[-2000:]}"
    assert sorted(store.iter_artifacts()) == before and store.verify() == {}, "nothing computed is lost"


@pytest.mark.parametrize("case", sorted(LABEL_SPACE))
def test_label_space_refuses(env: dict[str, str], inputs: Path, case: str) -> None:
    args, expected = LABEL_SPACE[case]
    args = ["--descriptors", CITYSCAPES, *args] if "--descriptors" not in args and "--dataset" not in args else args
    _check(env, ["label-space", *_fill(args, inputs, env)], _fill(expected, inputs, env))


@pytest.mark.parametrize("case", sorted(MODEL))
def test_train_and_evaluate_refuse(env: dict[str, str], inputs: Path, case: str) -> None:
    args, expected = MODEL[case]
    _check(env, [*_fill(args, inputs, env), "--config", "demo", "--cfg-options", "train_cfg.max_iters=1"],
           _fill(expected, inputs, env))
