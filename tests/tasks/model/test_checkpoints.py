"""A checkpoint file is checked before torch reads it, and what torch's reader refuses is said in
one line naming the file (evaluate and predict load through the same guard)."""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

import pytest
import torch

from prolab_models.errors import ProLabInputError
from tasks.model.checkpoints import check_checkpoint_file, last_checkpoint, loading_checkpoint


class _RunsCode:
    """Pickles as a call to os.system: the full unpickler would run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


CHECKPOINT = {"state_dict": {"w": torch.zeros(2)}, "meta": {"iter": 2}}


def _saved(path: Path, **options: object) -> Path:
    torch.save(CHECKPOINT, path, **options)
    return path


def test_what_torch_save_writes_passes(tmp_path: Path) -> None:
    buffer = io.BytesIO()  # as mmengine saves: the records under "archive/", not the file's name
    torch.save(CHECKPOINT, buffer)
    (tmp_path / "from-a-buffer.pth").write_bytes(buffer.getvalue())
    legacy = _saved(tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)  # torch < 1.6's format
    for path in (_saved(tmp_path / "iter_2.pth"), tmp_path / "from-a-buffer.pth", legacy):
        assert check_checkpoint_file(path) == path
        with loading_checkpoint(path):
            assert torch.load(path, weights_only=True)["meta"] == {"iter": 2}


def test_a_truncated_checkpoint_is_refused_naming_the_file(tmp_path: Path) -> None:
    data = _saved(tmp_path / "whole.pth").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ProLabInputError, match=re.escape(f"{path}: a truncated or damaged PyTorch checkpoint")):
        check_checkpoint_file(path)


def test_a_record_missing_from_the_archive_is_refused_as_damaged(tmp_path: Path) -> None:
    with zipfile.ZipFile(_saved(tmp_path / "whole.pth")) as whole, \
            zipfile.ZipFile(tmp_path / "holed.pth", "w") as holed:
        for name in whole.namelist():
            if "/data/" not in name:  # the tensor's storage
                holed.writestr(name, whole.read(name))
    path = check_checkpoint_file(tmp_path / "holed.pth")
    with pytest.raises(ProLabInputError, match=re.escape(f"{path}: a damaged PyTorch checkpoint")):
        with loading_checkpoint(path):
            torch.load(path, weights_only=True)


def test_bytes_that_are_not_an_archive_are_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "random.pth"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ProLabInputError, match=re.escape(f"{path}: not a PyTorch checkpoint")):
        check_checkpoint_file(path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "iter_2.pth").write_bytes(os.urandom(4096))
    with pytest.raises(ProLabInputError, match=re.escape(f"{tmp_path / 'run' / 'iter_2.pth'}: not a PyTorch")):
        last_checkpoint(tmp_path / "run")  # what evaluate, predict and the command resolve a run with


def test_an_archive_without_torch_records_is_refused_naming_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes/data.pkl", b"")
    with pytest.raises(ProLabInputError, match="without the version in one directory that torch.save writes"):
        check_checkpoint_file(path)


def test_a_checkpoint_carrying_code_is_refused_in_one_line_and_not_run(tmp_path: Path) -> None:
    marker, path = tmp_path / "ran", tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": _RunsCode(marker)}, path)
    check_checkpoint_file(path)  # the format is torch.save's: only the unpickler can tell
    with pytest.raises(ProLabInputError, match=re.escape(f"{path}: refused to load this checkpoint, it holds more")):
        with loading_checkpoint(path):
            torch.load(path, weights_only=True)
    assert not marker.exists()


def test_unreadable_records_are_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "damaged.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("damaged/data.pkl", b"\x80\x02garbage")
        archive.writestr("damaged/version", "3\n")
    check_checkpoint_file(path)
    with pytest.raises(ProLabInputError, match=re.escape(f"{path}: not a readable PyTorch checkpoint (Unsupported")) \
            as refused:
        with loading_checkpoint(path):
            torch.load(path, weights_only=True)
    assert "weights_only" not in str(refused.value), "torch's advice to load without the guard is not repeated"


def test_other_errors_pass_through(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="a bug, not a file"):
        with loading_checkpoint(tmp_path / "x.pth"):
            raise RuntimeError("a bug, not a file")
