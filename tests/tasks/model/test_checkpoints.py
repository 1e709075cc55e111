"""A checkpoint file is checked before torch reads it, and what torch's reader refuses is said in
one line naming the file (evaluate and predict load through the same guard)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch

from prolab_models.errors import ProLabInputError
from tasks.model.checkpoints import check_checkpoint_file, loading_checkpoint


class _RunsCode:
    """Pickles as a call to os.system: the full unpickler would run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def test_what_torch_save_writes_passes(tmp_path: Path) -> None:
    path = tmp_path / "iter_2.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "meta": {"iter": 2}}, path)
    assert check_checkpoint_file(path) == path
    with loading_checkpoint(path):
        assert torch.load(path, weights_only=True)["meta"] == {"iter": 2}


def test_bytes_that_are_not_an_archive_are_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "random.pth"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ProLabInputError, match=f"{path}: not a PyTorch checkpoint"):
        check_checkpoint_file(path)


def test_an_archive_without_torch_records_is_refused_naming_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes/data.pkl", b"")
    with pytest.raises(ProLabInputError, match="without the version that torch.save writes"):
        check_checkpoint_file(path)


def test_a_checkpoint_carrying_code_is_refused_in_one_line_and_not_run(tmp_path: Path) -> None:
    marker, path = tmp_path / "ran", tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": _RunsCode(marker)}, path)
    check_checkpoint_file(path)  # the format is torch.save's: only the unpickler can tell
    with pytest.raises(ProLabInputError, match=f"{path}: refused to load this checkpoint, it holds more than weights"):
        with loading_checkpoint(path):
            torch.load(path, weights_only=True)
    assert not marker.exists()


def test_unreadable_records_are_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "damaged.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("damaged/data.pkl", b"\x80\x02garbage")
        archive.writestr("damaged/version", "3\n")
    check_checkpoint_file(path)
    with pytest.raises(ProLabInputError, match=f"{path}: not a readable PyTorch checkpoint"):
        with loading_checkpoint(path):
            torch.load(path, weights_only=True)


def test_other_errors_pass_through(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="a bug, not a file"):
        with loading_checkpoint(tmp_path / "x.pth"):
            raise RuntimeError("a bug, not a file")
