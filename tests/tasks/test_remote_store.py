"""The store at an fsspec URL: a local cache mirrors the remote, a publication commits its manifest
last, and a remote copy is trusted only once its downloaded files match that manifest. Within one
process on ``memory://``, and across processes sharing a ``file://`` root."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from tasks.errors import ArtifactError
from tasks.files import MANIFEST
from tasks.gc import DAY, Collector, Entry
from tasks.registry import LABEL_SPACE_STAGES
from tasks.store import ArtifactStore
from tests.helpers.cli import CITYSCAPES, PROJECT_ROOT, shared_path
from tests.helpers.label_space_stages import EncodeCounter, build


@pytest.fixture
def url() -> Iterator[str]:
    """A fresh ``memory://`` root, removed afterwards: the memory file system lives as long as the process."""
    root = f"memory://prolab-{uuid.uuid4().hex[:8]}"
    yield root
    memory = fsspec.filesystem("memory")
    if memory.exists(root):
        memory.rm(root, recursive=True)


@pytest.fixture
def open_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``open_store(root, machine)``: the store as one machine sees it, with that machine's own cache."""

    def open_(root: str, machine: str) -> ArtifactStore:
        monkeypatch.setenv("PROLAB_CACHE", str(tmp_path / f"cache-{machine}"))
        return ArtifactStore(root)

    return open_


def _write(store: ArtifactStore, key: str = "k") -> Path:
    with store.create("stage", key, version="1", params={"p": 1}, inputs={}) as tmp:
        (tmp / "out.txt").write_text("hello")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "deep.bin").write_bytes(b"\x00\x01")
    return store.path("stage", key)


def _remote(url: str, *parts: str) -> str:
    return "/".join([url, *parts])


def test_an_artifact_published_by_one_cache_is_fetched_by_another(url: str, open_store) -> None:
    first = open_store(url, "a")
    written = _write(first)
    memory = fsspec.filesystem("memory")
    assert sorted(memory.find(url)) == sorted(_remote(url, "stage", "k", name).replace("memory://", "/")
                                              for name in ("out.txt", "sub/deep.bin", MANIFEST))
    assert first.location == url and written.is_relative_to(first.root)

    second = open_store(url + "/", "b")  # the same store, however the URL ends
    assert second.location == url and second.root != first.root
    found = second.get("stage", "k")
    assert found is not None and found.path == second.path("stage", "k")
    assert (found.path / "sub" / "deep.bin").read_bytes() == b"\x00\x01"
    assert found.manifest == json.loads((written / MANIFEST).read_text())
    assert second.verify() == {} and list((second.root / "stage").iterdir()) == [found.path]


def _flip(memory, path: str) -> None:
    data = bytearray(memory.cat_file(path))
    data[0] ^= 0xFF
    memory.pipe_file(path, bytes(data))


def _edit_manifest(memory, path: str, change) -> None:
    manifest = json.loads(memory.cat_file(path))
    change(manifest)
    memory.pipe_file(path, json.dumps(manifest).encode())


DAMAGE = {
    "flipped byte": lambda memory, d: _flip(memory, f"{d}/sub/deep.bin"),
    "missing file": lambda memory, d: memory.rm_file(f"{d}/out.txt"),
    "unreadable manifest": lambda memory, d: memory.pipe_file(f"{d}/{MANIFEST}", b"{not json"),
    "manifest of another key": lambda memory, d: _edit_manifest(memory, f"{d}/{MANIFEST}",
                                                                 lambda m: m.update(key="other")),
    "manifest naming a file outside": lambda memory, d: _edit_manifest(
        memory, f"{d}/{MANIFEST}", lambda m: m["files"].update({"../../escape.txt": "0" * 64})),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_remote_copy_is_reported_never_a_hit_and_a_recompute_repairs_it(
    url: str, open_store, damage: str, caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    _write(open_store(url, "a"))
    memory = fsspec.filesystem("memory")
    DAMAGE[damage](memory, _remote(url, "stage", "k"))

    reader = open_store(url, "b")
    with caplog.at_level(logging.WARNING):
        assert reader.get("stage", "k") is None
    assert f"remote artifact {url}/stage/k is damaged, not trusted" in caplog.text
    assert list(reader.verify()) == [f"{url}/stage/k"]
    assert not (reader.root / "stage" / "k").exists() and not list(tmp_path.rglob("escape.txt"))

    _write(reader)  # the stage recomputes it and publishes it again
    assert open_store(url, "c").get("stage", "k") is not None
    assert open_store(url, "d").verify() == {}


def test_files_published_without_their_manifest_are_not_an_artifact(url: str, open_store) -> None:
    """A publisher killed before its manifest, the commit marker, leaves nothing a reader trusts."""
    _write(open_store(url, "a"))
    fsspec.filesystem("memory").rm_file(_remote(url, "stage", "k", MANIFEST))
    reader = open_store(url, "b")
    assert reader.get("stage", "k") is None and reader.verify() == {}
    assert not (reader.root / "stage" / "k").exists()


def test_a_local_artifact_the_remote_lacks_is_published_on_the_next_lookup(url: str, open_store) -> None:
    writer = open_store(url, "a")
    _write(writer)
    fsspec.filesystem("memory").rm(_remote(url, "stage"), recursive=True)  # a publication lost
    assert open_store(url, "b").get("stage", "k") is None
    assert writer.get("stage", "k") is not None
    assert open_store(url, "c").get("stage", "k") is not None


def test_gc_removes_an_upload_without_its_manifest_once_abandoned_and_never_a_committed_one(
        url: str, open_store) -> None:
    store = open_store(url, "a")
    _write(store, "committed")
    _write(store, "killed")
    memory = fsspec.filesystem("memory")
    memory.rm_file(_remote(url, "stage", "killed", MANIFEST))  # its publisher died before the commit
    upload = _remote(url, "stage", "killed")

    def entry(collector: Collector) -> Entry:
        (found,) = [e for e in collector.entries() if e.path == upload]
        return found

    young = entry(Collector(store, keep_days=1))
    assert not young.remove and "may be an upload in progress" in young.why
    later = Collector(store, keep_days=1, now=time.time() + 2 * DAY)
    abandoned = entry(later)
    uploaded = [f for f in store.path("stage", "killed").rglob("*") if f.is_file() and f.name != MANIFEST]
    assert abandoned.remove and abandoned.why.startswith("abandoned")
    assert abandoned.size == sum(f.stat().st_size for f in uploaded)
    assert [e.path for e in later.entries() if e.kind == "remote upload"] == [upload], "committed ones are not listed"
    assert later.remove(abandoned)
    assert not memory.exists(upload) and store.remote is not None and store.remote.has("stage", "committed")


def test_a_root_with_an_unknown_protocol_is_an_error_naming_it() -> None:
    with pytest.raises(ArtifactError, match="artifact store nosuch://bucket/prolab: cannot open it"):
        ArtifactStore("nosuch://bucket/prolab")


def test_a_plain_path_store_does_not_import_fsspec(tmp_path: Path) -> None:
    code = ("import sys\nfrom tasks.store import ArtifactStore\n"
            f"ArtifactStore({str(tmp_path)!r}).get('stage', 'k')\nprint('fsspec' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.strip() == "False", result.stderr[-2000:]


def test_label_space_stages_on_a_url_store_run_once_for_two_caches(
    url: str, open_store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    descriptors = shared_path(CITYSCAPES)
    counter = EncodeCounter(monkeypatch)
    first = build(descriptors, open_store(url, "a"), k=6)
    assert counter.texts

    counter.texts.clear()
    with caplog.at_level(logging.INFO):
        second = build(descriptors, open_store(url, "b"), k=6)
    assert counter.texts == [] and "computing" not in caplog.text
    assert caplog.text.count(f"fetched from {url}") == len(LABEL_SPACE_STAGES)
    for stage in LABEL_SPACE_STAGES:
        assert second[stage] != first[stage] and second[stage].name == first[stage].name
        assert (second[stage] / MANIFEST).read_bytes() == (first[stage] / MANIFEST).read_bytes()


# The label-space chain (describe by import ... repair) in a process of its own, as ``build`` runs
# it; prints the cluster artifact. (A ``tests`` package in site-packages hides this checkout's tests/ from a subprocess.)
RUN_STAGES = """
import logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from tasks.params import ClusterParams, DescribeParams, EndToEndParams, LabelSpaceParams
from tasks.registry import LABEL_SPACE_STAGES, run_stages
from tasks.store import ArtifactStore
store = ArtifactStore(sys.argv[2])
params = LabelSpaceParams(describe=DescribeParams(descriptors=Path(sys.argv[1])), cluster=ClusterParams(k=6))
print(run_stages(EndToEndParams(label_space=params), store, LABEL_SPACE_STAGES)["cluster"])
"""


def _run_stages(root: str, cache: Path) -> tuple[Path, str]:
    env = {**os.environ, "PROLAB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", RUN_STAGES, str(shared_path(CITYSCAPES)), root], env=env,
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1]), result.stderr


def test_processes_sharing_a_file_url_compute_once_and_never_trust_a_flipped_byte(
    tmp_path: Path, open_store,
) -> None:
    shared = tmp_path / "shared-store"
    root = f"file://{shared}"
    first, log = _run_stages(root, tmp_path / "cache-a")
    assert "cluster: computing" in log

    second, log = _run_stages(root, tmp_path / "cache-b")
    assert "computing" not in log, log[-3000:]
    assert second.is_relative_to(tmp_path / "cache-b") and second.name == first.name
    assert (second / "properties.parquet").read_bytes() == (first / "properties.parquet").read_bytes()

    remote = shared / "cluster" / first.name / "properties.parquet"
    original = remote.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    remote.write_bytes(bytes(flipped))

    _, log = _run_stages(root, tmp_path / "cache-c")
    assert f"remote artifact {root}/cluster/{first.name} is damaged, not trusted" in log
    assert "cluster: computing" in log and "embed: computing" not in log, "only the damaged stage reruns"
    assert remote.read_bytes() == original, "k-means with a fixed seed publishes the same bytes again"
    assert open_store(root, "d").verify() == {}
