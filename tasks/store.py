"""The content-addressed artifact store: ``<root>/<stage>/<key>/`` plus ``manifest.json``.

A key is the hash of everything that determines a stage's output (stage version,
parameters, the keys or content hashes of its inputs), so an unchanged stage is a lookup.
An artifact appears only complete: it is written to a temporary directory beside its
final place and renamed into place; a directory whose files do not match the hashes in
its manifest is never a hit: it is reported and moved aside to ``<root>/.quarantine``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"
QUARANTINE = ".quarantine"
KEY_LENGTH = 16
# Libraries whose versions are recorded in every manifest.
TRACKED_LIBRARIES = (
    "torch", "mmsegmentation", "mmcv", "mmengine", "timm", "prefect", "openai",
    "sentence-transformers", "scikit-learn", "pandas", "pyarrow", "numpy",
)


class ArtifactError(RuntimeError):
    """A stored artifact is missing, incomplete or does not match its manifest."""


def default_root() -> Path:
    """``$PROLAB_ARTIFACTS`` or ``artifacts/`` under the current directory."""
    return Path(os.environ.get("PROLAB_ARTIFACTS", "artifacts")).expanduser()


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def artifact_key(stage: str, version: str, params: Mapping[str, Any], inputs: Mapping[str, str]) -> str:
    """The key of a stage's output: a hash of its version, parameters and input identities."""
    payload = canonical_json({"stage": stage, "version": version, "params": params, "inputs": inputs})
    return sha256_bytes(payload.encode())[:KEY_LENGTH]


def library_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def _file_hashes(directory: Path) -> dict[str, str]:
    return {
        path.relative_to(directory).as_posix(): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


@dataclass(frozen=True)
class Artifact:
    """A complete, verified artifact directory and its manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def key(self) -> str:
        return self.manifest["key"]


class ArtifactStore:
    """Artifacts under one root directory; safe for concurrent writers of the same key."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser().resolve() if root is not None else default_root().resolve()

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def problems(self, directory: Path) -> list[str]:
        """What is wrong with an artifact directory; empty when it matches its manifest."""
        manifest_path = directory / MANIFEST
        if not manifest_path.is_file():
            return [f"{directory}: no {MANIFEST}"]
        try:
            manifest = json.loads(manifest_path.read_text())
            expected: dict[str, str] = manifest["files"]
        except (ValueError, KeyError, TypeError) as error:
            return [f"{manifest_path}: unreadable manifest ({error})"]
        found = _file_hashes(directory)
        issues = [f"{directory / name}: missing" for name in expected if name not in found]
        issues += [f"{directory / name}: not in the manifest" for name in found if name not in expected]
        issues += [
            f"{directory / name}: sha256 differs from the manifest"
            for name, digest in expected.items()
            if name in found and found[name] != digest
        ]
        return issues

    def get(self, stage: str, key: str) -> Artifact | None:
        """The verified artifact, or None. A damaged one is reported and moved aside."""
        directory = self.path(stage, key)
        if not directory.exists():
            return None
        issues = self.problems(directory)
        if issues:
            log.warning("artifact %s/%s is damaged and will be recomputed: %s", stage, key, "; ".join(issues))
            self._quarantine(directory)
            return None
        return Artifact(directory, json.loads((directory / MANIFEST).read_text()))

    def _quarantine(self, directory: Path) -> None:
        target = self.root / QUARANTINE / f"{directory.parent.name}-{directory.name}-{uuid.uuid4().hex[:8]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):  # another process moved it first
            directory.rename(target)

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
        """Yield a temporary directory to fill; on success it becomes ``<stage>/<key>``.

        On an exception the temporary directory is removed and nothing appears. When
        another writer finished the same key first, its (identical) artifact is kept.
        """
        final = self.path(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f"{TMP_PREFIX}{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        started = time.time()
        try:
            yield tmp
            manifest = {
                "stage": stage,
                "key": key,
                "version": version,
                "params": dict(params),
                "inputs": dict(inputs),
                "files": _file_hashes(tmp),
                "libraries": library_versions(),
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "seconds": round(time.time() - started, 3),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
            try:
                tmp.rename(final)
            except OSError:
                if self.get(stage, key) is None:  # not a finished twin: a real failure
                    raise
                log.info("artifact %s/%s was written concurrently; keeping the first", stage, key)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def iter_artifacts(self) -> Iterator[Path]:
        if not self.root.is_dir():
            return
        for stage_dir in sorted(self.root.iterdir()):
            if not stage_dir.is_dir() or stage_dir.name.startswith("."):
                continue
            for directory in sorted(stage_dir.iterdir()):
                # Hidden entries are work in progress, not artifacts: ``.tmp-*`` (an artifact being
                # written) and ``train/.work-*`` (a resumable training run killed before it finished).
                if directory.is_dir() and not directory.name.startswith("."):
                    yield directory

    def verify(self) -> dict[Path, list[str]]:
        """Every damaged artifact under the root with what is wrong with it."""
        return {d: issues for d in self.iter_artifacts() if (issues := self.problems(d))}
