"""``prolab train --nproc-per-node 2`` as a user runs it: the train task starts torchrun, the two
processes train the demo model on the CPU with gloo. One rank killed mid-run fails the command
with the run's last lines; the rerun resumes from the last checkpoint, in two processes again,
and leaves a run that evaluates."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from data.demo import DEMO_CLASSES
from tests.helpers.cli import PROJECT_ROOT, PROLAB, last_line, prolab, with_group_killed
from tests.helpers.demo_runs import tiny_options
from tests.helpers.label_space_factory import make_label_space

# The tiny demo model for 4 iterations, a checkpoint after each (KEY=VALUE as the command line takes them;
# the config's own PreciseBN hook, on 2 batches).
OPTIONS = [f"{key}={json.dumps(value).replace(' ', '')}"
           for key, value in {**tiny_options(4), "default_hooks.checkpoint.interval": 1}.items()
           if key != "custom_hooks"] + ["custom_hooks.0.num_batches=2"]


@dataclass(frozen=True)
class KilledRun:
    returncode: int
    stderr: str
    pid: int  # the rank killed
    work_dir: Path


def _train_args(space: Path, demo_root: Path) -> list[str]:
    return ["train", "--config", "demo", "--data-root", str(demo_root), "--label-space", str(space),
            "--nproc-per-node", "2", "--cfg-options", *OPTIONS]


def _rank_process(rank: int, work_dir_parent: Path) -> int | None:
    """The pid of the training process of ``rank`` whose work dir is under ``work_dir_parent``."""
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            command = proc.joinpath("cmdline").read_bytes().split(b"\0")
            if b"tasks.model.train" in command and str(work_dir_parent).encode() in b" ".join(command) \
                    and f"RANK={rank}".encode() in proc.joinpath("environ").read_bytes().split(b"\0"):
                return int(proc.name)
    return None


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_label_space(tmp_path_factory.mktemp("ls") / "ls", DEMO_CLASSES, k=6, dim=16)


@pytest.fixture(scope="module")
def killed(env: dict[str, str], space: Path, demo_root: Path) -> KilledRun:
    """``prolab train`` in two processes, rank 1 SIGKILLed once the first checkpoint is recorded."""
    store = Path(env["PROLAB_ARTIFACTS"])
    log = store.parent / "killed-rank.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen([PROLAB, *_train_args(space, demo_root)], env=env, stdout=subprocess.DEVNULL,
                                   stderr=stderr, cwd=PROJECT_ROOT, start_new_session=True)
        try:
            deadline, pid = time.monotonic() + 400, None
            while pid is None:
                assert process.poll() is None, f"prolab ended before the kill:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"no checkpoint within 400 s:\n{log.read_text()[-3000:]}"
                if list(store.glob("train/.work-*/last_checkpoint")):
                    pid = _rank_process(1, store / "train")
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)
            returncode = process.wait(120)
        finally:
            with_group_killed(process)
    (work_dir,) = store.glob("train/.work-*")
    return KilledRun(returncode, log.read_text(), pid, work_dir)


@pytest.fixture(scope="module")
def resumed(env: dict[str, str], space: Path, demo_root: Path, killed: KilledRun) -> tuple[int, str, Path]:
    """The same command again: the last checkpoint the killed run left, the rerun's stderr and its run."""
    last = int(Path((killed.work_dir / "last_checkpoint").read_text().strip()).stem.split("_")[1])
    started = time.monotonic()
    result = prolab(env, *_train_args(space, demo_root))
    print(f"two-process rerun of the tiny demo model: {time.monotonic() - started:.1f} s")
    return last, result.stderr, last_line(result)


def test_a_killed_rank_fails_the_command_with_the_runs_last_lines(killed: KilledRun) -> None:
    assert killed.returncode == 1, killed.stderr[-3000:]
    error = killed.stderr.split("prolab: error: ", 1)[1]
    assert error.startswith("torchrun of 2 training processes exited with status 1; its output ends with:\n"), error
    assert f"Signal 9 (SIGKILL) received by PID {killed.pid}" in error, error


def test_the_rerun_resumes_from_the_last_checkpoint_in_two_processes(killed: KilledRun,
                                                                    resumed: tuple[int, str, Path]) -> None:
    last, stderr, run = resumed
    assert re.search(rf"resumed epoch: \d+, iter: {last}\b", stderr), stderr[-3000:]
    trained = [int(m) for m in re.findall(r"Iter\(train\) \[\s*(\d+)/4\]", stderr)]
    assert trained and min(trained) == last + 1, f"iterations after resuming from {last}: {trained}"
    assert "GPU number: 2" in stderr  # mmengine's name for the world size
    assert (run / "iter_4.pth").is_file() and not killed.work_dir.exists()
    assert json.loads((run / "manifest.json").read_text())["params"]["world_size"] == 2


def test_the_two_process_run_evaluates(env: dict[str, str], space: Path, demo_root: Path,
                                       resumed: tuple[int, str, Path]) -> None:
    evaluation = last_line(prolab(env, "evaluate", "--config", "demo", "--data-root", str(demo_root), "--label-space",
                                  str(space), "--checkpoint", str(resumed[2]), "--cfg-options", *OPTIONS))
    assert 0 <= json.loads((evaluation / "metrics.json").read_text())["mIoU"] <= 100


pytestmark = pytest.mark.timeout(1200)
