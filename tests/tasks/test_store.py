"""The artifact store: atomic creation, verification, damage detection, concurrent writers, the
sweep of temporary directories left by killed writers, and its locks."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tasks.errors import ArtifactError
from tasks.files import MANIFEST
from tasks.store import QUARANTINE, ArtifactStore, artifact_key, flock
from tests.helpers.cli import PROJECT_ROOT


def _write(store: ArtifactStore, key: str, text: str = "hello") -> Path:
    with store.create("stage", key, version="1", params={"p": 1}, inputs={"in": "x"}) as tmp:
        (tmp / "out.txt").write_text(text)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "deep.bin").write_bytes(b"\x00\x01")
    return store.path("stage", key)


def test_key_depends_on_version_params_and_inputs() -> None:
    base = artifact_key("s", "1", {"a": 1}, {"i": "k"})
    assert base == artifact_key("s", "1", {"a": 1}, {"i": "k"})
    assert len({base, artifact_key("s", "2", {"a": 1}, {"i": "k"}), artifact_key("s", "1", {"a": 2}, {"i": "k"}),
                artifact_key("s", "1", {"a": 1}, {"i": "other"})}) == 4


@pytest.mark.parametrize("under", ["", "prolab/artifacts"])
def test_a_root_that_is_a_file_or_under_one_is_refused_when_opened(tmp_path: Path, under: str) -> None:
    """Refused before any stage runs, naming the root and the file in its way."""
    (tmp_path / "a-file").write_text("not a directory")
    root = tmp_path / "a-file" / under
    expected = f"artifact store {root}: Not a directory ({tmp_path / 'a-file'} is not one)"
    with pytest.raises(ArtifactError, match=re.escape(expected)):
        ArtifactStore(root)
    assert ArtifactStore(tmp_path / "not-yet" / "made").root == tmp_path / "not-yet" / "made"  # made when written


def test_created_artifact_has_manifest_with_hashes_params_and_libraries(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    path = _write(store, "k1")
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["stage"] == "stage" and manifest["params"] == {"p": 1} and manifest["inputs"] == {"in": "x"}
    assert set(manifest["files"]) == {"out.txt", "sub/deep.bin"}
    assert "torch" in manifest["libraries"] and manifest["seconds"] >= 0
    assert store.get("stage", "k1").path == path
    assert [p.name for p in (tmp_path / "stage").iterdir()] == ["k1"]  # no temporary left


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError), store.create("stage", "k", version="1", params={}, inputs={}) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("killed")
    assert list((tmp_path / "stage").iterdir()) == []
    assert store.get("stage", "k") is None


@pytest.mark.parametrize("damage", ["flip", "delete", "add", "manifest"])
def test_damaged_artifact_is_reported_never_a_hit(tmp_path: Path, damage: str) -> None:
    store = ArtifactStore(tmp_path)
    path = _write(store, "k")
    target = path / "sub" / "deep.bin"
    if damage == "flip":
        data = bytearray(target.read_bytes())
        data[0] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "delete":
        target.unlink()
    elif damage == "add":
        (path / "stray.txt").write_text("?")
    else:
        (path / MANIFEST).write_text("{not json")
    problems = store.verify()
    assert list(problems) == [path] and problems[path]
    assert store.get("stage", "k") is None  # not a hit ...
    assert not path.exists() and any((tmp_path / QUARANTINE).iterdir())  # ... and moved aside, not deleted
    _write(store, "k")  # the next run recomputes it
    assert store.get("stage", "k") is not None and store.verify() == {}


def test_concurrent_writers_of_one_key_both_succeed(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with store.create("stage", "same", version="1", params={}, inputs={}) as tmp:
                (tmp / "out.txt").write_text("identical")
                barrier.wait()
        except BaseException as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [p.name for p in (tmp_path / "stage").iterdir()] == ["same"]
    assert store.verify() == {}


# A writer in its own process, inside ``create`` for stage/same until its stdin closes.
HOLDING_WRITER = """
import sys
from tasks.store import ArtifactStore
with ArtifactStore(sys.argv[1]).create("stage", "same", version="1", params={}, inputs={}) as tmp:
    (tmp / "out.txt").write_text("half")
    print(tmp, flush=True)
    sys.stdin.read()
"""


def _holding_writer(root: Path) -> tuple[subprocess.Popen[str], Path]:
    writer = subprocess.Popen([sys.executable, "-c", HOLDING_WRITER, str(root)], cwd=PROJECT_ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    return writer, Path(writer.stdout.readline().strip())


def test_a_live_writers_temporary_survives_sweeps_and_a_killed_ones_is_swept(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    (first, first_tmp), (second, second_tmp) = _holding_writer(tmp_path), _holding_writer(tmp_path)
    work = tmp_path / "train" / f".work-{'0' * 16}"  # resumable training work is never swept
    work.mkdir(parents=True)
    legacy = tmp_path / "stage" / ".tmp-old-0123abcd"  # a writer the name does not identify
    legacy.mkdir()
    try:
        assert first_tmp.is_dir() and second_tmp.is_dir() and first_tmp != second_tmp
        _write(store, "other")  # a create in the same stage directory sweeps it
        assert store.sweep() == []
        assert first_tmp.is_dir() and second_tmp.is_dir(), "a live writer's temporary is never removed"

        first.kill()
        first.wait(10)
        _write(store, "another")
        assert not first_tmp.exists(), "the next create in the stage directory sweeps a dead writer's"
        assert second_tmp.is_dir()
    finally:
        for writer in (first, second):
            writer.kill()
            writer.wait(10)
    assert store.sweep() == [second_tmp]
    assert work.is_dir() and legacy.is_dir()
    assert {p.name for p in (tmp_path / "stage").iterdir()} == {"other", "another", legacy.name}


def test_a_key_lock_admits_one_holder_at_a_time(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    counter = threading.Lock()
    inside = most = 0

    def hold() -> None:
        nonlocal inside, most
        with store.lock("train", "key"):  # each call opens the file anew: flock excludes threads as it does processes
            with counter:
                inside += 1
                most = max(most, inside)
            time.sleep(0.05)
            with counter:
                inside -= 1

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert most == 1


def test_a_lock_file_removed_while_a_process_waits_on_it_is_never_held_twice(tmp_path: Path) -> None:
    """gc removes a stale lock file while holding it; a process that was waiting on that file
    must then lock the file now at its path, not the removed one (two holders of one lock)."""
    path = tmp_path / "stage-key.use"
    first = flock(path, fcntl.LOCK_EX)
    inode = os.stat(path).st_ino
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(flock(path, fcntl.LOCK_SH)))
    waiter.start()
    deadline = time.monotonic() + 10
    while not any("->" in line and f":{inode} " in line for line in Path("/proc/locks").read_text().splitlines()):
        assert time.monotonic() < deadline, "the waiter never waited on the lock"
        time.sleep(0.01)
    path.unlink()
    os.close(first)
    waiter.join(10)
    assert got and os.path.samestat(os.fstat(got[0]), os.stat(path)), "it holds the file now at the path"
    with pytest.raises(BlockingIOError):
        flock(path, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(got[0])
