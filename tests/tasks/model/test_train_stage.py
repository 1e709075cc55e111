"""The train stage in the store: one trainer per key, however many runs ask for it at once."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tasks.model import train as train_stage
from tasks.params import EndToEndParams, TrainParams
from tasks.stage import StagePlan
from tasks.store import ArtifactStore
from tests.helpers.cli import SHARED


def test_two_runs_of_one_training_key_train_once_and_share_its_artifact(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    trained: list[Path] = []

    def slow_train(config: str, label_space: Path, work_dir: Path, data_root: Path, cfg_options: dict,
                   **transfer: object) -> Path:
        trained.append(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        time.sleep(0.3)  # long enough for the second run to arrive while the first trains
        checkpoint = work_dir / "iter_1.pth"
        checkpoint.write_bytes(b"weights")
        return checkpoint

    monkeypatch.setattr("tasks.model.train.train", slow_train)
    store = ArtifactStore(tmp_path / "store")
    plan = StagePlan("train", "test", {"config": "demo"}, {"label_space": "cluster/0123"})
    params = EndToEndParams(train=TrainParams(data_root=tmp_path))
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: train_stage.run(plan, params, {"label_space": tmp_path / "ls"}, store),
                             range(2)))
    assert runs == [store.path("train", plan.key)] * 2
    assert len(trained) == 1, "the second run waited, then found the first one's artifact"
    assert (runs[0] / "iter_1.pth").read_bytes() == b"weights"
    assert [p.name for p in (store.root / "train").iterdir()] == [plan.key], "no work dir or temporary left"


def test_a_dataset_copied_anew_keeps_its_training_key_and_an_edited_one_does_not(tmp_path: Path) -> None:
    """The dataset's fingerprint is by content (under 1 GiB): the same files written again, as a
    re-download or a re-provisioned ../shared writes them (new modification times and inodes),
    find the trainings they had. (The key holds the resolved config, and with it the data root.)"""
    source = SHARED / "data" / "camvid_mini"
    if not source.is_dir():
        pytest.skip(f"{source} absent")
    root = tmp_path / "camvid"

    def key() -> str:
        params = EndToEndParams(train=TrainParams(config="camvid_ce", data_root=root))
        return train_stage.plan(params, {"label_space": "cluster/0123"}).key

    shutil.copytree(source, root, copy_function=shutil.copyfile)
    first = key()
    shutil.rmtree(root)
    time.sleep(0.01)
    shutil.copytree(source, root, copy_function=shutil.copyfile)
    assert key() == first
    label = next((root / "trainannot").iterdir())
    label.write_bytes(label.read_bytes() + b"\0")
    assert key() != first
