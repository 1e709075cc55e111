"""Training in more than one process, from the train stage: torchrun (on this node) or srun
(inside a Slurm allocation) starts ``python -m tasks.model.train`` once per process, and the
stage's task follows it as one subprocess.

So Prefect keeps one task run for the stage, mmengine gets the environment its ``--launcher``
expects (torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; under ``srun`` mmengine reads ``SLURM_PROCID``, ``SLURM_NTASKS`` and
``SLURM_NODELIST``), and the processes' output is logged line by line through this module's
logger, which the deployments route into the task run's logs (``PREFECT_LOGGING_EXTRA_LOGGERS``).
A process that fails (a killed rank ends the others: torchrun's default, ``--kill-on-bad-exit``
for srun) fails the task with the last lines of that output; the work dir keeps its
checkpoints, so the next attempt resumes from the last one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

from tasks.errors import ProLabError
from tasks.model.checkpoints import last_checkpoint
from tasks.params import TrainParams
from tasks.processes import free_port, stop

log = logging.getLogger(__name__)

ENTRY_POINT = "tasks.model.train"
TAIL_LINES = 40  # a failed rank's traceback, then torchrun's own and its summary
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # mmengine colours its level names


class TrainingProcessError(ProLabError, RuntimeError):
    """A multi-process training run failed; the message quotes the end of its output."""


class LauncherNotFoundError(ProLabError):
    """The launcher a multi-process run names is not installed here."""


def srun() -> str:
    """``srun``'s path: a Slurm launch runs where Slurm is, inside an allocation."""
    found = shutil.which("srun")
    if found is None:
        raise LauncherNotFoundError("launcher slurm: srun is not on the PATH; run the worker (or prolab) inside a "
                                    "Slurm allocation, or use launcher pytorch (torchrun) on one node")
    return found


def check_launcher(params: TrainParams) -> None:
    """Refuse a layout that this machine cannot start (a Slurm launch without srun) before any
    stage runs; torchrun comes with torch."""
    if params.world_size > 1 and params.launcher == "slurm":
        srun()


def entry_arguments(params: TrainParams, label_space: Path, work_dir: Path, data_root: Path) -> list[str]:
    """What every process passes to ``tasks.model.train``: the same run as the one-process call
    (the overrides as JSON, which keeps values that KEY=VALUE cannot write, a list of dicts)."""
    arguments = ["--config", params.config, "--label-space", str(label_space), "--work-dir", str(work_dir),
                 "--data-root", str(data_root), "--cfg-options-json", json.dumps(params.cfg_options)]
    if params.held_out:
        arguments += ["--held-out", ",".join(params.held_out), "--held-out-images", params.held_out_images]
    return arguments


def launch_command(params: TrainParams, arguments: Sequence[str]) -> list[str]:
    """torchrun or srun starting ``params.world_size`` processes of the entry point."""
    if params.launcher == "pytorch":
        # --standalone: a rendezvous on a free local port, so two runs on one node do not collide
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                "--nproc-per-node", str(params.nproc_per_node), "-m", ENTRY_POINT, *arguments, "--launcher", "pytorch"]
    return [srun(), "--nodes", str(params.nnodes), "--ntasks-per-node", str(params.nproc_per_node),
            "--kill-on-bad-exit=1", sys.executable, "-m", ENTRY_POINT, *arguments, "--launcher", "slurm"]


def launch_env(params: TrainParams, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The processes' environment: unbuffered output (each line logged as written) and, under
    Slurm, a ``MASTER_PORT`` free on this node (the allocation's first, where a batch script runs)
    unless one is set, instead of mmengine's fixed 29500."""
    env = {**(os.environ if base is None else base), "PYTHONUNBUFFERED": "1"}
    if params.launcher == "slurm":
        env.setdefault("MASTER_PORT", str(free_port()))
    return env


def run_logged(command: Sequence[str], env: Mapping[str, str] | None = None, name: str = "training") -> None:
    """Run ``command``, logging each line of its output (stdout and stderr) as it comes; a
    non-zero exit raises ``TrainingProcessError`` quoting its last lines. Interrupted (Ctrl-C, a
    cancelled task), the command is stopped: torchrun and srun stop their processes with it."""
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    process = subprocess.Popen(list(command), env=None if env is None else dict(env), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    try:
        assert process.stdout is not None
        for line in process.stdout:
            line = _COLOUR.sub("", line.rstrip())
            tail.append(line)
            log.info("%s", line)
        code = process.wait()
    finally:
        stop(process)
    if code != 0:
        lines = "\n".join(tail)
        raise TrainingProcessError(f"{name} exited with status {code}; its output ends with:\n{lines}")


def train_processes(params: TrainParams, label_space: Path, work_dir: Path, data_root: Path) -> Path:
    """Train (or resume) in ``params.world_size`` processes; return the final checkpoint."""
    command = launch_command(params, entry_arguments(params, label_space, work_dir, data_root))
    log.info("training in %d processes: %s", params.world_size, " ".join(command))
    launcher = "torchrun" if params.launcher == "pytorch" else "srun"
    run_logged(command, launch_env(params), name=f"{launcher} of {params.world_size} training processes")
    return last_checkpoint(work_dir)
