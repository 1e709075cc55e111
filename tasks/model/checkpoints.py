"""Where a training run's checkpoint is, and whether it is one: light enough for the command line
to name a run before it decides whether anything must run (no mmengine, no torch)."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prolab_models.errors import MissingInputError, ProLabInputError
from tasks.files import MANIFEST


def last_checkpoint(run: Path) -> Path:
    """A checkpoint file, or a work dir's latest (mmengine's ``last_checkpoint`` record), refused
    unless it is what ``torch.save`` writes (``check_checkpoint_file``)."""
    if run.is_file():
        return check_checkpoint_file(run)
    record = run / "last_checkpoint"
    if record.is_file():
        path = Path(record.read_text().strip())
        if path.is_file():
            return check_checkpoint_file(path)
    found = sorted(run.glob("iter_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
    if not found:
        raise MissingInputError(f"{run}: no checkpoint (neither a .pth file nor a work dir holding one)")
    return check_checkpoint_file(found[-1])


ZIP_MAGIC = b"PK\x03\x04"  # torch.load reads a file as torch.save's zip format when it starts so
# torch.save's format before torch 1.6: a pickled magic number first; torch.load still reads it
LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"


def check_checkpoint_file(path: Path) -> Path:
    """``path``, refused unless it is what ``torch.save`` writes: a zip archive whose records
    share one directory and include ``data.pkl`` and ``version`` (every mmengine checkpoint), or
    the pre-1.6 format, left to ``loading_checkpoint``. Anything else would reach torch's reader,
    whose error for arbitrary bytes depends on the bytes (EOF, a bad opcode, a decoding error)."""
    try:
        with open(path, "rb") as file:
            head = file.read(len(LEGACY_MAGIC))
    except PermissionError as error:
        raise ProLabInputError(f"{path}: cannot be read ({error.strerror})") from None
    if head == LEGACY_MAGIC:
        return path
    if not head.startswith(ZIP_MAGIC):
        raise ProLabInputError(f"{path}: not a PyTorch checkpoint (torch.save writes a zip archive; this file is "
                               f"not one)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as error:
        raise ProLabInputError(f"{path}: a truncated or damaged PyTorch checkpoint ({error})") from None
    prefix = names[0].split("/", 1)[0] if names and "/" in names[0] else None
    records = {name.split("/", 1)[1] for name in names if prefix is not None and name.startswith(f"{prefix}/")}
    missing = [name for name, found in (("data.pkl", "data.pkl" in records),
                                        ("version", bool({"version", ".data/version"} & records))) if not found]
    if missing:
        raise ProLabInputError(f"{path}: not a PyTorch checkpoint (a zip archive without the "
                               f"{' and '.join(missing)} in one directory that torch.save writes)")
    return path


@contextmanager
def loading_checkpoint(path: Path) -> Iterator[None]:
    """Say in one line naming ``path`` why ``torch.load`` refused it: a file that would run code
    when unpickled (``weights_only`` allows weights only; never retried without it), or a damaged
    archive."""
    try:
        yield
    except pickle.UnpicklingError as error:
        # torch wraps the unpickler's own error in advice to retry without weights_only: say the cause
        cause = str(error.__context__ or error)
        reason = next((line for line in str(error).splitlines() if "GLOBAL" in line), None)
        if reason is None:
            first = cause.splitlines()[0].strip() if cause.strip() else type(error).__name__
            raise ProLabInputError(f"{path}: not a readable PyTorch checkpoint ({first})") from None
        raise ProLabInputError(f"{path}: refused to load this checkpoint, it holds more than weights "
                               f"({reason.strip()})") from None
    except RuntimeError as error:
        if "PytorchStreamReader" not in str(error):
            raise  # not from torch's reader of the zip archive
        raise ProLabInputError(f"{path}: a damaged PyTorch checkpoint ({str(error).splitlines()[0]})") from None


def training_run(checkpoint: Path) -> Path:
    """What ``prolab evaluate --checkpoint`` names: a run of the store as it is (named by its key),
    any other work dir by its last checkpoint (named by that file's content, and refused here
    unless it is a checkpoint file)."""
    checkpoint = checkpoint.expanduser().resolve()
    return checkpoint if (checkpoint / MANIFEST).is_file() else last_checkpoint(checkpoint)
