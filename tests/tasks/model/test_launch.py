"""More than one training process: what names the layout in the key, how the processes are
started, and how their failure reaches the task. Real runs: tests/flows/test_cli_train_processes.py
and tests/flows/test_deployments.py."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from tasks.model.launch import (
    TAIL_LINES,
    LauncherNotFoundError,
    TrainingProcessError,
    check_launcher,
    entry_arguments,
    launch_command,
    launch_env,
    run_logged,
)
from tasks.model.train import plan
from tasks.params import EndToEndParams, TrainParams
from tasks.preflight import preflight
from tasks.registry import LABEL_SPACE
from tests.helpers.demo_runs import tiny_options


def test_the_key_names_the_world_size_but_not_the_launcher_nor_how_processes_are_spread(demo_root: Path) -> None:
    def key(**layout: object) -> str:
        train = TrainParams(data_root=demo_root, cfg_options=tiny_options(2), **layout)
        return plan(EndToEndParams(train=train), {"label_space": "repair/abc"}).key

    one = plan(EndToEndParams(train=TrainParams(data_root=demo_root)), {"label_space": "repair/abc"})
    assert "world_size" not in one.params, "one process: the key names no layout"
    assert key() == key(launcher="slurm")
    assert key(nproc_per_node=2) == key(nproc_per_node=2, launcher="slurm") == key(nnodes=2, launcher="slurm")
    assert key(nproc_per_node=2) != key() != key(nproc_per_node=4)


def test_torchrun_starts_the_processes_of_one_node_on_a_port_of_their_own() -> None:
    params = TrainParams(nproc_per_node=2)
    command = launch_command(params, ["--config", "demo"])
    assert command == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                       "--nproc-per-node", "2", "-m", "tasks.model.train", "--config", "demo", "--launcher", "pytorch"]
    assert "MASTER_PORT" not in launch_env(params, {})


def test_srun_starts_nodes_times_tasks_per_node_and_ends_them_all_when_one_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    srun = tmp_path / "srun"  # only found on the PATH, never run: this machine has no Slurm
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    params = TrainParams(nproc_per_node=4, nnodes=2, launcher="slurm")
    check_launcher(params)
    assert launch_command(params, ["--config", "ade20k"]) == [
        str(srun), "--nodes", "2", "--ntasks-per-node", "4", "--kill-on-bad-exit=1", sys.executable, "-m",
        "tasks.model.train", "--config", "ade20k", "--launcher", "slurm"]
    assert launch_env(params, {"MASTER_PORT": "12345"})["MASTER_PORT"] == "12345"
    assert int(launch_env(params, {})["MASTER_PORT"]) > 0


def test_a_slurm_launch_without_srun_is_refused_before_any_stage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_root: Path, demo_label_space: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    check_launcher(TrainParams(launcher="slurm"))  # one process trains in the task: no srun needed
    params = EndToEndParams(train=TrainParams(data_root=demo_root, nproc_per_node=2, launcher="slurm"))
    with pytest.raises(LauncherNotFoundError, match="launcher slurm: srun is not on the PATH"):
        preflight(params, ["train"], {LABEL_SPACE: demo_label_space})


def test_every_process_gets_the_overrides_as_json_and_the_held_out_classes(tmp_path: Path) -> None:
    params = TrainParams(cfg_options={"custom_hooks": [{"type": "PreciseBNHook"}]}, held_out=["person", "car"])
    arguments = entry_arguments(params, tmp_path / "ls", tmp_path / "work", tmp_path / "data")
    assert arguments[arguments.index("--cfg-options-json") + 1] == '{"custom_hooks": [{"type": "PreciseBNHook"}]}'
    assert arguments[arguments.index("--held-out") + 1] == "person,car"


@pytest.mark.parametrize("layout, message", [
    ({"nproc_per_node": 0}, "nproc_per_node\n  Input should be greater than or equal to 1"),
    ({"nnodes": 0, "launcher": "slurm"}, "nnodes\n  Input should be greater than or equal to 1"),
    ({"nnodes": 2}, "torchrun starts processes on its own node only; nnodes=2 needs launcher 'slurm'"),
    ({"launcher": "mpi"}, "launcher\n  Input should be 'pytorch' or 'slurm'"),
])
def test_a_layout_that_cannot_run_is_refused_by_the_parameters(layout: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainParams(**layout)


def test_a_failed_process_fails_with_its_last_lines_after_logging_each_line(caplog: pytest.LogCaptureFixture) -> None:
    script = "import sys\nfor i in range(100): print(f'line {i}', file=sys.stderr if i % 2 else sys.stdout, flush=True)\nsys.exit(3)"
    with caplog.at_level(logging.INFO, logger="tasks.model.launch"), \
            pytest.raises(TrainingProcessError) as failed:
        run_logged([sys.executable, "-c", script], name="the script")
    assert [record.getMessage() for record in caplog.records] == [f"line {i}" for i in range(100)]
    message = str(failed.value)
    assert message.startswith("the script exited with status 3; its output ends with:\n")
    assert message.splitlines()[1:] == [f"line {i}" for i in range(100 - TAIL_LINES, 100)]
