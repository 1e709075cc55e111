"""Which errors the command line shows as one line: the project's own (``ProLabError``), a missing
path the user named among them; anything else is a bug, and keeps its traceback."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path

import pytest

from flows.cli import EXIT_FAILED, main
from prolab_models.datasets.fingerprint import dataset_fingerprint


def _gc_raising(monkeypatch: pytest.MonkeyPatch, fault: Callable[[], object]) -> None:
    """``prolab gc`` whose collector fails in ``fault()`` (the command needs no server)."""

    def collector(*args: object) -> None:
        fault()

    monkeypatch.setattr("tasks.gc.Collector", collector)


def test_a_missing_path_the_user_named_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _gc_raising(monkeypatch, lambda: dataset_fingerprint(tmp_path / "absent"))
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(["gc", "--artifacts", str(tmp_path / "store")])
    assert code == EXIT_FAILED
    assert stderr.getvalue() == f"prolab: error: {tmp_path / 'absent'}: dataset root not found\n"


def test_a_file_not_found_raised_by_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    _gc_raising(monkeypatch, lambda: (tmp_path / "internal.json").read_text())
    with pytest.raises(FileNotFoundError, match="internal.json"):
        main(["gc", "--artifacts", str(tmp_path / "store")])
