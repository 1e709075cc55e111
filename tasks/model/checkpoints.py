"""Where a training run's checkpoint is: light enough for the command line to name a run before
it decides whether anything must run (no mmengine, no torch)."""

from __future__ import annotations

from pathlib import Path

from tasks.files import MANIFEST


def last_checkpoint(run: Path) -> Path:
    """A checkpoint file, or a work dir's latest (mmengine's ``last_checkpoint`` record)."""
    if run.is_file():
        return run
    record = run / "last_checkpoint"
    if record.is_file():
        path = Path(record.read_text().strip())
        if path.is_file():
            return path
    found = sorted(run.glob("iter_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
    if not found:
        raise FileNotFoundError(f"{run}: no checkpoint (neither a .pth file nor a work dir holding one)")
    return found[-1]


def training_run(checkpoint: Path) -> Path:
    """What ``prolab evaluate --checkpoint`` names: a run of the store as it is (named by its key),
    any other work dir by its last checkpoint (named by that file's content)."""
    checkpoint = checkpoint.expanduser().resolve()
    return checkpoint if (checkpoint / MANIFEST).is_file() else last_checkpoint(checkpoint)
