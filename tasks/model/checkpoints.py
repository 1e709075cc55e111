"""Where a training run's checkpoint is, and whether it is one: light enough for the command line
to name a run before it decides whether anything must run (no mmengine, no torch)."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prolab_models.errors import ProLabInputError
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


def check_checkpoint_file(path: Path) -> Path:
    """``path``, refused unless it is what ``torch.save`` writes (since torch 1.6, and so every
    mmengine checkpoint): a zip archive holding ``<name>/data.pkl`` and ``<name>/version``.
    Anything else would reach torch's reader, whose error for arbitrary bytes depends on the
    bytes (EOF, a bad opcode, a decoding error, a missing record)."""
    if not zipfile.is_zipfile(path):
        raise ProLabInputError(f"{path}: not a PyTorch checkpoint (torch.save writes a zip archive; this file is "
                               f"not one)")
    with zipfile.ZipFile(path) as archive:
        records = {name.split("/", 1)[-1] for name in archive.namelist()}
    missing = [record for record in ("data.pkl", "version") if record not in records]
    if missing:
        raise ProLabInputError(f"{path}: not a PyTorch checkpoint (a zip archive without the "
                               f"{' and '.join(missing)} that torch.save writes)")
    return path


@contextmanager
def loading_checkpoint(path: Path) -> Iterator[None]:
    """Say in one line naming ``path`` why ``torch.load`` refused it: a file that would run code
    when unpickled (``weights_only`` allows weights only; never retried without it), or a damaged
    archive."""
    try:
        yield
    except pickle.UnpicklingError as error:
        lines = str(error).splitlines() or [type(error).__name__]
        reason = next((line for line in lines if "GLOBAL" in line), None)
        if reason is None:
            raise ProLabInputError(f"{path}: not a readable PyTorch checkpoint ({lines[0].strip()})") from None
        raise ProLabInputError(f"{path}: refused to load this checkpoint, it holds more than weights "
                               f"({reason.strip()})") from None
    except RuntimeError as error:
        if "PytorchStreamReader" not in str(error):
            raise  # not from torch's reader of the zip archive
        raise ProLabInputError(f"{path}: a damaged PyTorch checkpoint ({str(error).splitlines()[0]})") from None


def training_run(checkpoint: Path) -> Path:
    """What ``prolab evaluate --checkpoint`` names: a run of the store as it is (named by its key),
    any other work dir by its last checkpoint (named by that file's content), refused here unless
    it is a checkpoint file."""
    checkpoint = checkpoint.expanduser().resolve()
    return checkpoint if (checkpoint / MANIFEST).is_file() else check_checkpoint_file(last_checkpoint(checkpoint))
