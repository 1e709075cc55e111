"""SIGKILL in each stage: the store holds no torn artifact, the next run completes reusing what
finished and sweeps the killed writer's temporary directory, and training resumes from its last
checkpoint.

Each kill is of the ``prolab`` process group, the moment a marker appears (a file in the store,
or a log line): never a sleep. Stages are killed in pipeline order on one store, so every rerun
also proves that the stages finished before the kill are reused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from data.demo import DEMO_CLASSES
from tasks.registry import LABEL_SPACE_STAGES
from tests.helpers.cli import kill_when, last_line, prolab
from tests.helpers.fake_llm import FakeLLM
from tests.helpers.label_space_factory import make_label_space
from tests.helpers.store_checks import assert_store_sound, stray_temporaries

# The demo model shrunk to seconds an iteration; 4 iterations, a checkpoint after each.
TINY_RESUMABLE = [
    "--cfg-options",
    "model.backbone.embed_dim=48", "model.backbone.depth=2", "model.backbone.interaction_indexes=[[0,0],[1,1]]",
    "model.decode_head.in_channels=[48,48,48,48]", "model.decode_head.channels=16",
    "model.auxiliary_head.in_channels=48", "model.auxiliary_head.channels=8",
    "train_cfg.max_iters=4", "train_cfg.val_interval=4", "default_hooks.checkpoint.interval=1",
    "default_hooks.logger.interval=1", "custom_hooks.0.num_batches=2",
    "train_dataloader.batch_size=2", "train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
    "val_dataloader.batch_size=1", "val_dataloader.num_workers=0", "val_dataloader.persistent_workers=False",
    "test_dataloader.num_workers=0", "test_dataloader.persistent_workers=False",
]


def _log_has(log: Path, text: str) -> bool:
    return log.is_file() and text in log.read_text(errors="replace")


def test_sigkill_in_describe_embed_and_cluster(cli_env: dict[str, str], tmp_path: Path) -> None:
    store = Path(cli_env["PROLAB_ARTIFACTS"])
    cache = store / ".cache" / "llm"
    with FakeLLM(latency_s=0.3) as llm:
        args = ["label-space", "--dataset", "camvid", "--llm", llm.base_url, "--model", "fake-model",
                "--concurrency", "1", "--k", "6", "--repair-rounds", "0"]

        # describe: killed once 3 of the 11 answers are cached
        kill_when(cli_env, lambda: len(list(cache.glob("*.json"))) >= 3, *args)
        assert "describe" not in assert_store_sound(store)
        cached = {json.loads(p.read_text())["identity"]["class"] for p in cache.glob("*.json")}
        asked_before = len(llm.asked())

        # the encoder: killed while it encodes (in verify, the first stage that embeds, or in embed);
        # describe finishes first, asking only what was not cached
        log = tmp_path / "embed.log"
        kill_when(cli_env, lambda: _log_has(log, "new texts with"), *args, log=log)
        assert set(assert_store_sound(store)) in ({"describe"}, {"describe", "verify"})
        again = [r.category for r in llm.asked()[asked_before:]]
        assert not cached & set(again), f"cached answers were asked again: {cached & set(again)}"

        # cluster: killed once it starts; describe and embed are reused
        log = tmp_path / "cluster.log"
        stderr = kill_when(cli_env, lambda: _log_has(log, "cluster: computing"), *args, log=log)
        assert "describe: computing" not in stderr and "embed: computing" in stderr
        found = assert_store_sound(store)
        assert set(found) in ({"describe", "verify", "embed"}, {"describe", "verify", "embed", "cluster"})  # killed before/after rename

        done = prolab(cli_env, *args)
        directory = last_line(done)
        assert "describe: computing" not in done.stderr and "embed: computing" not in done.stderr
        assert "new texts" not in done.stderr and "cluster" in done.stderr
    found = assert_store_sound(store, allow_temporaries=False)  # each rerun swept what its stage's kill left
    assert {stage: len(keys) for stage, keys in found.items()} == {stage: 1 for stage in LABEL_SPACE_STAGES}
    assert (directory / "properties.parquet").is_file()
    assert prolab(cli_env, "verify").returncode == 0
    assert len(llm.asked()) <= 11 + 1, "at most the one request in flight at the kill is asked twice"


def test_sigkill_in_train_resumes_from_the_last_checkpoint_and_in_evaluate_recomputes(
    cli_env: dict[str, str], tmp_path: Path, demo_root: Path,
) -> None:
    store = Path(cli_env["PROLAB_ARTIFACTS"])
    space = make_label_space(tmp_path / "ls", DEMO_CLASSES, k=6, dim=16)
    train = ["train", "--config", "demo", "--data-root", str(demo_root), "--label-space", str(space),
             *TINY_RESUMABLE]

    def second_checkpoint_recorded() -> bool:
        return any("iter_2.pth" in p.read_text() for p in store.glob("train/.work-*/last_checkpoint"))

    kill_when(cli_env, second_checkpoint_recorded, *train)
    assert "train" not in assert_store_sound(store)
    (work_dir,) = store.glob("train/.work-*")
    assert (work_dir / "iter_2.pth").is_file()

    resumed = prolab(cli_env, *train)
    run = last_line(resumed)
    assert re.search(r"resumed epoch: \d+, iter: [23]\b", resumed.stderr), resumed.stderr[-3000:]
    trained_iters = [int(m) for m in re.findall(r"Iter\(train\) \[\s*(\d+)/4\]", resumed.stderr)]
    assert trained_iters and min(trained_iters) >= 3, f"iterations after resuming: {trained_iters}"
    assert (run / "iter_4.pth").is_file() and not work_dir.exists()

    evaluate = ["evaluate", "--config", "demo", "--data-root", str(demo_root), "--label-space", str(space),
                "--checkpoint", str(run), *TINY_RESUMABLE]
    kill_when(cli_env, lambda: bool(list(store.glob("evaluate/.tmp-*/*"))), *evaluate)
    assert "evaluate" not in assert_store_sound(store)
    assert stray_temporaries(store), "the killed evaluate left its temporary directory"
    metrics = last_line(prolab(cli_env, *evaluate)) / "metrics.json"
    assert 0 <= json.loads(metrics.read_text())["mIoU"] <= 100
    found = assert_store_sound(store)
    assert {stage: len(keys) for stage, keys in found.items()} == {"train": 1, "evaluate": 1}
    assert prolab(cli_env, "verify").returncode == 0
    # A SIGKILL runs no clean-up; the next run's create swept the killed writers' temporaries.
    assert stray_temporaries(store) == []


pytestmark = pytest.mark.timeout(900)
