"""The artifact store at an fsspec URL (``s3://``, ``gs://``, ``file://``, ``memory://``), mirrored
by a local cache directory.

Stages read and write local directories (mmengine, pandas and Parquet want paths), so with a
URL root ``ArtifactStore`` keeps its artifacts in a local cache (``$PROLAB_CACHE/<hash of the
URL>``, default ``~/.cache/prolab/``) and this module publishes them to the remote and fetches
them from it. Object stores have no atomic directory rename, so ``manifest.json`` is the commit
marker: a publication uploads every file first and the manifest last, and a reader trusts a
remote artifact only after downloading the files its manifest lists and checking their sha256.
A half-published or damaged copy is a miss, never a hit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import os
import posixpath
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from fsspec.core import url_to_fs

from tasks.errors import ArtifactError
from tasks.files import MANIFEST, manifest_problems, sha256_bytes

log = logging.getLogger(__name__)


def cache_dir(url: str) -> Path:
    """The local cache of the store at ``url``: one directory per URL under ``$PROLAB_CACHE``."""
    base = os.environ.get("PROLAB_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "prolab"
    return Path(base).expanduser().resolve() / sha256_bytes(url.encode())[:16]


@functools.cache
def open_remote(url: str) -> RemoteStore:
    """The remote store at ``url``, opened once per process."""
    return RemoteStore(url.rstrip("/"))


def _modified(info: dict[str, Any]) -> float | None:
    """When a file was last written (seconds since the epoch), from whichever field its file
    system gives (local: mtime; memory: created; S3: LastModified; GCS: updated); None if none."""
    for field in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(field)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = dt.datetime.fromisoformat(value)
        if isinstance(value, dt.datetime):
            return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    return None


def _manifest_files(raw: bytes, stage: str, key: str) -> list[str]:
    """The files a remote manifest lists. One that names another artifact, or a file outside its
    directory, is refused: a hostile remote must not write elsewhere in the cache."""
    manifest = json.loads(raw)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ValueError("unreadable manifest (no files table)")
    if (manifest.get("stage"), manifest.get("key")) != (stage, key):
        raise ValueError(f"names {manifest.get('stage')}/{manifest.get('key')}, not {stage}/{key}")
    for name in manifest["files"]:
        path = PurePosixPath(name)
        if not path.parts or path.is_absolute() or ".." in path.parts or name == MANIFEST:
            raise ValueError(f"lists {name!r}, not a file inside the artifact")
    return list(manifest["files"])


class RemoteStore:
    """``<url>/<stage>/<key>/``: an artifact's files and, committed last, its manifest."""

    def __init__(self, url: str) -> None:
        self.url = url
        with self._errors("open it"):
            self.fs, self.path = url_to_fs(url)
            with contextlib.suppress(FileNotFoundError):  # a store nothing was written to yet
                self.fs.ls(self.path, detail=False)  # credentials, network and paths fail here, before any stage

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Any failure of the remote as one ArtifactError that names the root."""
        try:
            yield
        except Exception as error:  # each fsspec backend raises its own types (botocore, aiohttp, OSError)
            raise ArtifactError(f"artifact store {self.url}: cannot {action} ({type(error).__name__}: {error})") \
                from error

    def url_of(self, stage: str, key: str) -> str:
        return f"{self.url}/{stage}/{key}"

    def _dir(self, stage: str, key: str) -> str:
        return f"{self.path}/{stage}/{key}"

    def has(self, stage: str, key: str) -> bool:
        """Whether ``<stage>/<key>`` is committed (its manifest is there)."""
        with self._errors("read it"):
            return self.fs.exists(f"{self._dir(stage, key)}/{MANIFEST}")

    def download(self, stage: str, key: str, into: Path) -> list[str] | None:
        """Download a committed artifact into the empty directory ``into``. None when there is
        none; else what is wrong with it, file by file (empty: every sha256 matches its manifest)."""
        remote, shown = self._dir(stage, key), self.url_of(stage, key)
        with self._errors("read it"):
            try:
                raw = self.fs.cat_file(f"{remote}/{MANIFEST}")
            except FileNotFoundError:
                return None
            try:
                names = _manifest_files(raw, stage, key)
            except ValueError as error:
                return [f"{shown}/{MANIFEST}: {error}"]
            for name in names:
                target = into / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):  # reported as missing below
                    self.fs.get_file(f"{remote}/{name}", str(target))
        (into / MANIFEST).write_bytes(raw)
        return manifest_problems(into, shown)

    def publish(self, stage: str, key: str, directory: Path) -> None:
        """Upload a verified local artifact: its files, then its manifest. A previous copy is
        un-committed first, so no reader pairs its manifest with the files being replaced."""
        remote = self._dir(stage, key)
        names = sorted(json.loads((directory / MANIFEST).read_text())["files"])
        staged = f"{remote}/.{MANIFEST}.{uuid.uuid4().hex[:8]}"
        with self._errors("write to it"):
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(f"{remote}/{MANIFEST}")
            for parent in sorted({remote} | {posixpath.dirname(f"{remote}/{name}") for name in names}):
                self.fs.makedirs(parent, exist_ok=True)
            for name in names:
                self.fs.put_file(str(directory / name), f"{remote}/{name}")
            self.fs.put_file(str(directory / MANIFEST), staged)
            self.fs.mv(staged, f"{remote}/{MANIFEST}")  # whole at once where the remote renames atomically
        log.info("%s/%s: published to %s", stage, key, self.url)

    def artifacts(self) -> list[tuple[str, str]]:
        """``(stage, key)`` of every committed artifact."""
        return sorted((stage, key) for stage, key, _ in self._committed("*"))

    def put_bytes(self, relative: str, data: bytes) -> None:
        """Write ``<url>/<relative>`` whole (a run record of ``tasks/lineage.py``)."""
        with self._errors("write to it"):
            self.fs.makedirs(posixpath.dirname(f"{self.path}/{relative}"), exist_ok=True)
            self.fs.pipe_file(f"{self.path}/{relative}", data)

    def read_matching(self, pattern: str) -> dict[str, bytes]:
        """The content of every file matching ``<url>/<pattern>``, by file name."""
        with self._errors("read it"):
            paths = self.fs.glob(f"{self.path}/{pattern}")
            raw = self.fs.cat(paths, on_error="omit") if paths else {}
        return {PurePosixPath(path).name: data for path, data in raw.items()}

    def uncommitted(self) -> list[tuple[str, int, float | None]]:
        """What publications left unfinished: every ``<stage>/<key>/`` without a manifest, and every
        staged manifest beside a committed one. Each as (URL, bytes, when it was last written, or
        None when the file system does not say)."""
        found = []
        with self._errors("list it"):
            committed = {posixpath.dirname(path) for _, _, path in self._committed("*")}
            for directory in self.fs.glob(f"{self.path}/*/*"):
                stage, key = PurePosixPath(directory).parts[-2:]
                if stage.startswith(".") or key.startswith(".") or not self.fs.isdir(directory):
                    continue
                pattern = f"{directory}/.{MANIFEST}.*" if directory in committed else f"{directory}/**"
                files = {path: info for path, info in self.fs.glob(pattern, detail=True).items()
                         if info.get("type") != "directory"}
                if directory in committed:
                    found += [(self._url(path), int(info.get("size") or 0), _modified(info))
                              for path, info in files.items()]
                else:
                    times = [_modified(info) for info in files.values()] or [_modified(self.fs.info(directory))]
                    known = None if None in times else max(times)
                    found.append((self._url(directory), sum(int(i.get("size") or 0) for i in files.values()), known))
        return sorted(found)

    def _url(self, path: str) -> str:
        return self.url + path[len(self.path):]

    def remove(self, url: str) -> None:
        """Remove ``url`` (under this store), recursively."""
        if not url.startswith(self.url + "/"):
            raise ValueError(f"{url}: not under {self.url}")
        with self._errors("remove from it"):
            self.fs.rm(self.path + url[len(self.url):], recursive=True)

    def _committed(self, stage: str) -> list[tuple[str, str, str]]:
        """``(stage, key, manifest path)`` under the stage pattern ``stage``; hidden names are not artifacts."""
        with self._errors("list it"):
            paths = self.fs.glob(f"{self.path}/{stage}/*/{MANIFEST}")
        found = []
        for path in paths:
            stage_name, key = PurePosixPath(path).parts[-3:-1]
            if not stage_name.startswith(".") and not key.startswith("."):
                found.append((stage_name, key, path))
        return found
