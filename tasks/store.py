"""The content-addressed artifact store: ``<root>/<stage>/<key>/`` plus ``manifest.json``.

A key is the hash of everything that determines a stage's output (stage version,
parameters, the keys or content hashes of its inputs), so an unchanged stage is a lookup.
An artifact appears only complete: it is written to a temporary directory beside its
final place and renamed into place; a directory whose files do not match the hashes in
its manifest is never a hit: it is reported and moved aside to ``<root>/.quarantine``.
A temporary directory's name carries its writer (pid and host), so one left by a killed
writer is swept once that process is gone.

Two kinds of lock live in ``<root>/.locks``, one file per key, both released by the kernel when
their process dies: a writer's (``<stage>-<key>.lock``: one process at a time computes a key
whose work outlives a temporary directory, training's ``<stage>/.work-<key>``), and a reader's
(``<stage>-<key>.use``, shared: the artifacts a running pipeline reads or writes, which
``prolab gc`` never removes).

The root may also be an fsspec URL (``s3://bucket/prolab``, ``file:///shared/prolab``): the
store is then that remote, mirrored by a local cache directory that the stages read and
write (``tasks/remote_store.py``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.errors import ArtifactError
from tasks.files import MANIFEST, file_hashes, manifest_problems, sha256_json

if TYPE_CHECKING:
    from tasks.remote_store import RemoteStore

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
WORK_PREFIX = ".work-"
QUARANTINE = ".quarantine"
LOCKS = ".locks"
# Prefect's cache record of each stage (``tasks/prefect_tasks.py``), named ``<stage>-<key>``.
RESULTS_DIR = ".prefect-results"
KEY_LENGTH = 16
# Libraries whose versions are recorded in every manifest.
TRACKED_LIBRARIES = (
    "torch", "mmsegmentation", "mmcv", "mmengine", "timm", "prefect", "openai",
    "sentence-transformers", "scikit-learn", "pandas", "pyarrow", "numpy",
)


def default_root() -> str:
    """``$PROLAB_ARTIFACTS`` or ``artifacts`` (under the current directory)."""
    return os.environ.get("PROLAB_ARTIFACTS", "artifacts")


def is_url(root: str | Path) -> bool:
    """Whether a root names an fsspec file system (``scheme://...``) rather than a local path."""
    return isinstance(root, str) and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", root) is not None


def artifact_key(stage: str, version: str, params: Mapping[str, Any], inputs: Mapping[str, str]) -> str:
    """The key of a stage's output: a hash of its version, parameters and input identities."""
    return sha256_json({"stage": stage, "version": version, "params": params, "inputs": inputs})[:KEY_LENGTH]


def library_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


@functools.cache
def _this_host() -> str:
    """This host and its pid namespace: together they say which process a writer's pid names."""
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "localhost"
    with contextlib.suppress(OSError):
        host += f".{os.stat('/proc/self/ns/pid').st_ino}"
    return host


def tmp_name(key: str) -> str:
    """``.tmp-<key>-<random>-<pid>@<host>``: unique, and naming the process that writes it."""
    return f"{TMP_PREFIX}{key}-{uuid.uuid4().hex[:8]}-{os.getpid()}@{_this_host()}"


def writer_is_dead(name: str) -> bool:
    """Whether a temporary directory's writer was a process of this host that has ended. A writer
    on another host, or one a name does not identify, is presumed alive."""
    head, at, host = name.rpartition("@")
    pid = head.rpartition("-")[2]
    if not at or host != _this_host() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # alive under another user, or no pid at all
        return False
    return False


def flock(path: Path, mode: int) -> int:
    """An open descriptor of ``path`` holding ``flock(mode)`` until it is closed (the kernel
    releases it if the process dies); ``BlockingIOError`` when ``mode`` has ``LOCK_NB`` and the
    lock is taken. A lock file unlinked or replaced while this waited (``prolab gc`` removing a
    stale one) is let go and the file now at ``path`` locked instead, so two holders never lock
    different files of one name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, mode)
            held, current = os.fstat(descriptor), os.stat(path)
        except FileNotFoundError:
            os.close(descriptor)
            continue
        except BaseException:
            os.close(descriptor)
            raise
        if held.st_nlink and (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
            return descriptor
        os.close(descriptor)


def _release_and_tidy(path: Path, descriptor: int) -> None:
    """Let go of a shared lock, removing its file when no other process holds it (an exclusive
    lock taken without waiting says so), so that ``.locks`` does not fill up with one file per key."""
    with contextlib.suppress(OSError):
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.path.samestat(os.fstat(descriptor), os.stat(path)):
            path.unlink()
    os.close(descriptor)


@dataclass(frozen=True)
class Artifact:
    """A complete, verified artifact directory and its manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def key(self) -> str:
        return self.manifest["key"]


class ArtifactStore:
    """Artifacts under one root, a directory or an fsspec URL; safe for concurrent writers of the same key.

    ``root`` is the local directory that stages read and write (for a URL root, the local cache);
    ``location`` names the store for other processes and machines (the URL, or that directory).
    """

    def __init__(self, root: str | Path | None = None) -> None:
        root = default_root() if root is None else root
        self.remote: RemoteStore | None = None
        if is_url(root):
            from tasks.remote_store import cache_dir, open_remote  # fsspec is imported for URL roots only

            self.remote = open_remote(str(root))
            self.root = cache_dir(self.remote.url)
            self.location = self.remote.url
        else:
            self.root = Path(root).expanduser().resolve()
            self.location = str(self.root)
            # refused here, before any flow run, not at the first lock taken under it
            try:
                existing = next(path for path in (self.root, *self.root.parents) if path.exists())
            except PermissionError as error:
                raise ArtifactError(f"artifact store {self.root}: {error}") from None
            if not existing.is_dir():
                raise ArtifactError(f"artifact store {self.root}: Not a directory ({existing} is not one)")

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    @property
    def embedding_cache(self) -> Path:
        """One embedding per (model, text), shared by every stage that encodes text; ``prolab gc`` keeps it."""
        return self.root / ".cache" / "embeddings"

    def problems(self, directory: Path) -> list[str]:
        """What is wrong with an artifact directory; empty when it matches its manifest."""
        return manifest_problems(directory, str(directory))

    def get(self, stage: str, key: str) -> Artifact | None:
        """The verified artifact, or None. A damaged one is reported and moved aside. With a
        remote, a local miss is fetched from it, and a local hit it lacks is published to it."""
        found = self._get_local(stage, key)
        if self.remote is None:
            return found
        if found is None:
            return self._fetch(self.remote, stage, key)
        if not self.remote.has(stage, key):  # its publication failed, or the remote lost it
            self.remote.publish(stage, key, found.path)
        return found

    def _get_local(self, stage: str, key: str) -> Artifact | None:
        directory = self.path(stage, key)
        if not directory.exists():
            return None
        issues = self.problems(directory)
        if issues:
            log.warning("artifact %s/%s is damaged and will be recomputed: %s", stage, key, "; ".join(issues))
            self._quarantine(directory)
            return None
        return Artifact(directory, json.loads((directory / MANIFEST).read_text()))

    def _fetch(self, remote: RemoteStore, stage: str, key: str) -> Artifact | None:
        """The remote copy, downloaded, checked against its manifest and renamed into the cache."""
        with self._scratch(stage, key) as tmp:
            issues = remote.download(stage, key, tmp)
            if issues is None:
                return None
            if issues:
                log.warning("remote artifact %s is damaged, not trusted, and will be recomputed: %s",
                            remote.url_of(stage, key), "; ".join(issues))
                return None
            self._settle(tmp, stage, key)
        log.info("%s/%s: fetched from %s", stage, key, remote.url)
        directory = self.path(stage, key)
        return Artifact(directory, json.loads((directory / MANIFEST).read_text()))

    def _quarantine(self, directory: Path) -> None:
        target = self.root / QUARANTINE / f"{directory.parent.name}-{directory.name}-{uuid.uuid4().hex[:8]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):  # another process moved it first
            directory.rename(target)

    @contextlib.contextmanager
    def _scratch(self, stage: str, key: str) -> Iterator[Path]:
        """A new temporary directory beside ``<stage>/<key>``, removed on exit. Those that
        writers killed before their clean-up ran are swept first."""
        stage_dir = self.root / stage
        stage_dir.mkdir(parents=True, exist_ok=True)
        self._sweep_dir(stage_dir)
        tmp = stage_dir / tmp_name(key)
        tmp.mkdir()
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _settle(self, tmp: Path, stage: str, key: str) -> None:
        """Rename a complete temporary directory to ``<stage>/<key>``, keeping a finished twin."""
        try:
            tmp.rename(self.path(stage, key))
        except OSError:
            if self._get_local(stage, key) is None:  # not a finished twin: a real failure
                raise
            log.info("artifact %s/%s was written concurrently; keeping the first", stage, key)

    @contextlib.contextmanager
    def create(
        self,
        stage: str,
        key: str,
        *,
        version: str,
        params: Mapping[str, Any],
        inputs: Mapping[str, str],
    ) -> Iterator[Path]:
        """Yield a temporary directory to fill; on success it becomes ``<stage>/<key>`` (and,
        with a remote, is published to it).

        On an exception the temporary directory is removed and nothing appears. When
        another writer finished the same key first, its (identical) artifact is kept.
        """
        with self._scratch(stage, key) as tmp:
            started = time.time()
            yield tmp
            manifest = {
                "stage": stage,
                "key": key,
                "version": version,
                "params": dict(params),
                "inputs": dict(inputs),
                "files": file_hashes(tmp),
                "libraries": library_versions(),
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "seconds": round(time.time() - started, 3),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
            self._settle(tmp, stage, key)
        if self.remote is not None:
            self.remote.publish(stage, key, self.path(stage, key))

    def work_dir(self, stage: str, key: str) -> Path:
        """Where a stage whose work outlives a temporary directory (training's resumable run)
        works on ``key``, under its writer lock; hidden, so never taken for an artifact."""
        return self.root / stage / f"{WORK_PREFIX}{key}"

    def lock_file(self, stage: str, key: str, kind: str = "lock") -> Path:
        """``<root>/.locks/<stage>-<key>.<kind>``: ``lock`` for the writer, ``use`` for readers."""
        return self.root / LOCKS / f"{stage}-{key}.{kind}"

    @contextlib.contextmanager
    def lock(self, stage: str, key: str) -> Iterator[None]:
        """Hold ``<stage>/<key>``'s writer lock: one process (or thread) at a time computes a key
        whose work outlives a temporary directory (training's resumable work dir). A killed
        holder's lock is released by the kernel."""
        from filelock import FileLock, Timeout

        path = self.lock_file(stage, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("%s/%s is being computed by another process; waiting for it", stage, key)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    @contextlib.contextmanager
    def using(self, refs: Iterable[str]) -> Iterator[None]:
        """Mark the artifacts ``refs`` (``<stage>/<key>``, present or still to be computed) as in
        use by this process for the block: ``prolab gc`` removes none of them meanwhile. A shared
        lock per key, so any number of pipelines use one artifact at once."""
        held: list[tuple[Path, int]] = []
        try:
            for ref in sorted(set(refs)):
                stage, _, key = ref.partition("/")
                path = self.lock_file(stage, key, "use")
                try:
                    held.append((path, flock(path, fcntl.LOCK_SH)))
                except PermissionError:  # a store this process cannot write cannot be collected by it either
                    log.debug("%s: not marked in use (store not writable)", ref)
            yield
        finally:
            for path, descriptor in held:
                _release_and_tidy(path, descriptor)

    def stage_dirs(self) -> list[Path]:
        """``<root>/<stage>`` directories; hidden ones (``.quarantine``, ``.prefect-results``, ``.runs``...) are not stages."""
        if not self.root.is_dir():
            return []
        return [d for d in sorted(self.root.iterdir()) if d.is_dir() and not d.name.startswith(".")]

    def iter_artifacts(self) -> Iterator[Path]:
        for stage_dir in self.stage_dirs():
            for directory in sorted(stage_dir.iterdir()):
                # Hidden entries are work in progress, not artifacts: ``.tmp-*`` (an artifact being
                # written) and ``train/.work-*`` (a resumable training run killed before it finished).
                if directory.is_dir() and not directory.name.startswith("."):
                    yield directory

    def sweep(self) -> list[Path]:
        """Remove the temporary directories whose writers died (a SIGKILL runs no clean-up) and
        return them. A live writer's is kept, and so is resumable training work (``.work-*``)."""
        return [swept for stage_dir in self.stage_dirs() for swept in self._sweep_dir(stage_dir)]

    def _sweep_dir(self, stage_dir: Path) -> list[Path]:
        swept = [tmp for tmp in sorted(stage_dir.glob(f"{TMP_PREFIX}*")) if writer_is_dead(tmp.name)]
        for tmp in swept:
            log.info("removing %s: its writer is gone", tmp)
            shutil.rmtree(tmp, ignore_errors=True)
        return swept

    def verify(self) -> dict[Path | str, list[str]]:
        """Every damaged artifact with what is wrong with it: local directories by path and, with a
        remote, its committed artifacts by URL (each downloaded into a temporary directory to be checked)."""
        damaged: dict[Path | str, list[str]] = {
            d: issues for d in self.iter_artifacts() if (issues := self.problems(d))
        }
        if self.remote is not None:
            for stage, key in self.remote.artifacts():
                with self._scratch(stage, key) as tmp:
                    issues = self.remote.download(stage, key, tmp)
                if issues:
                    damaged[self.remote.url_of(stage, key)] = issues
        return damaged
