"""gc's rule that the command line cannot reach: an artifact a running pipeline uses (the command's
own test is tests/flows/test_cli_store.py; a URL root's abandoned uploads, tests/tasks/test_remote_store.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tasks.gc import Collector
from tasks.store import ArtifactStore
from tests.helpers.cli import PROJECT_ROOT

# A pipeline using stage/k (tasks.registry.run_stages holds its inputs and outputs so) until stdin closes.
USER = """
import sys
from tasks.store import ArtifactStore
with ArtifactStore(sys.argv[1]).using(["stage/k"]):
    print("using", flush=True)
    sys.stdin.read()
"""


def _write(store: ArtifactStore, key: str = "k") -> Path:
    with store.create("stage", key, version="1", params={}, inputs={}) as tmp:
        (tmp / "out.txt").write_text("hello")
    return store.path("stage", key)


def _entry(collector: Collector, path: Path | str):  # -> a tasks.gc.Entry
    (entry,) = [e for e in collector.entries() if e.path == path]
    return entry


def test_an_artifact_a_running_pipeline_uses_is_never_removed(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    artifact = _write(store)
    collector = Collector(store, keep_days=0)
    doomed = _entry(collector, artifact)
    assert doomed.remove and doomed.why.startswith("superseded")  # nothing keeps it ...
    user = subprocess.Popen([sys.executable, "-c", USER, str(tmp_path)], cwd=PROJECT_ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert user.stdout.readline().strip() == "using"
        assert _entry(Collector(store, keep_days=0), artifact).why == "in use by a running pipeline"
        assert not collector.remove(doomed), "... but a pipeline started using it since it was listed"
        assert store.get("stage", "k") is not None
    finally:
        user.kill()
        user.wait(10)
    assert collector.remove(doomed)
    assert not artifact.exists() and not list((tmp_path / "stage").iterdir()), "nothing left half-removed"
    assert store.get("stage", "k") is None
