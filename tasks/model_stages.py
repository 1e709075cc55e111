"""The train and evaluate stages in the artifact store.

``tasks.train.train`` and ``tasks.evaluate.evaluate`` are the plain mmengine functions; this
module gives them keys and artifacts. A training run's key hashes the resolved config (with
its overrides), the label space's key and the dataset's fingerprint. Training runs in a stable
work dir (``<root>/train/.work-<key>``) so that a killed run resumes from its last checkpoint;
only a finished run becomes the artifact. One process at a time trains a key (``.lock-<key>``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from mmengine.config import Config

from tasks.params import EvaluateParams, TrainParams
from tasks.stage import StagePlan, materialize
from tasks.store import ArtifactStore, canonical_json, sha256_bytes, sha256_file

log = logging.getLogger(__name__)

TRAIN_VERSION = "1"
EVALUATE_VERSION = "1"
DEMO_DATASET = "ProLabDemoDataset"


def _config(params: TrainParams, data_root: Path | None) -> Config:
    from tasks.train import build_config

    # Placeholders: the config's identity must not depend on where the store or data live.
    return build_config(params.config, Path("<label-space>"), Path("<work-dir>"), data_root, params.cfg_options)


def resolve_data_root(params: TrainParams) -> Path:
    """The dataset root: the given one, the config's own, or the demo (generated on first use)."""
    if params.data_root is not None:
        return params.data_root.expanduser().resolve()
    dataset = _config(params, None).train_dataloader.dataset
    if dataset["type"] == DEMO_DATASET:
        from data.demo import DEFAULT_ROOT, generate_demo_dataset

        return generate_demo_dataset(DEFAULT_ROOT)
    return Path(dataset["data_root"]).expanduser().resolve()


def _dataset_identity(root: Path) -> str:
    from prolab_models.datasets.fingerprint import dataset_fingerprint

    from data.demo import DEFAULT_ROOT

    # The generated demo is hashed by content, so a regenerated copy keeps its key.
    return dataset_fingerprint(root, content=root == DEFAULT_ROOT.resolve())


def _identities(params: TrainParams) -> tuple[Config, str, str]:
    """What train and evaluate keys share: the resolved config, its hash and the dataset's fingerprint."""
    data_root = resolve_data_root(params)
    cfg = _config(params, data_root)
    return cfg, sha256_bytes(canonical_json(cfg.to_dict()).encode()), _dataset_identity(data_root)


def plan_train(label_space: str, params: TrainParams) -> StagePlan:
    """``label_space``: the label space's reference (``cluster/<key>``, see ``label_space_ref``)."""
    _, config_sha256, dataset = _identities(params)
    return StagePlan("train", TRAIN_VERSION,
                     {"config": params.config, "cfg_options": params.cfg_options, "config_sha256": config_sha256},
                     {"label_space": label_space, "dataset": dataset})


@contextlib.contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``lock``, removed on release so nothing is left
    behind. A waiter woken on a file its holder removed (and a third process may have created
    anew) has locked nothing that others see, so it tries again; a killed holder's lock is
    released by the kernel."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s is held by another process; waiting for it", lock)
            fcntl.flock(fd, fcntl.LOCK_EX)
        held = os.fstat(fd)
        with contextlib.suppress(FileNotFoundError):
            current = os.stat(lock)
            if (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
                break
        os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def run_train(label_space: Path, plan: StagePlan, params: TrainParams, store: ArtifactStore) -> Path:
    """The training run's artifact: config, logs, scalars and the final checkpoint.

    Two runs of one key would share the resumable work dir, and the first to finish moves its
    files away under the other: the second waits for the lock instead, then finds the artifact.
    """
    from tasks.train import train

    def build(out: Path) -> None:
        work_dir = store.root / "train" / f".work-{plan.key}"
        checkpoint = train(params.config, label_space, work_dir, resolve_data_root(params), params.cfg_options)
        for path in work_dir.iterdir():
            if path.suffix == ".pth" and path != checkpoint or path.name == "last_checkpoint":
                continue  # keep the final checkpoint only; the record holds an absolute path
            shutil.move(str(path), out / path.name)
        shutil.rmtree(work_dir)

    with exclusive(store.root / "train" / f".lock-{plan.key}"):
        return materialize(store, plan, build)


def checkpoint_ref(checkpoint: Path) -> str:
    """A training run from the store is named by its key; any other checkpoint by its content."""
    from tasks.train import last_checkpoint

    checkpoint = checkpoint.expanduser().resolve()
    manifest = checkpoint / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        return f"{data['stage']}/{data['key']}"
    return f"sha256:{sha256_file(last_checkpoint(checkpoint))}"


def plan_evaluate(run: str, label_space: str, train: TrainParams, params: EvaluateParams) -> StagePlan:
    from tasks.train import select_test_split

    cfg, config_sha256, dataset = _identities(train)
    select_test_split(cfg, train.config, params.split)  # refused here, before any stage runs
    return StagePlan("evaluate", EVALUATE_VERSION, {"split": params.split, "config_sha256": config_sha256},
                     {"run": run, "label_space": label_space, "dataset": dataset})


def run_evaluate(label_space: Path, run: Path, plan: StagePlan, train: TrainParams, params: EvaluateParams,
                 store: ArtifactStore) -> Path:
    """``metrics.json`` (mIoU in percent, aAcc, per-class IoU, property precision/recall) and pictures."""
    from tasks.evaluate import evaluate

    def build(out: Path) -> None:
        evaluate(train.config, label_space, run, out, resolve_data_root(train), params.split, train.cfg_options)

    return materialize(store, plan, build)

