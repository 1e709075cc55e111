"""A cheap identity for a dataset on disk, for the cache keys of the stages that read it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from prolab_models.errors import MissingInputError

_CHUNK = 1 << 20
# Datasets up to this size are hashed by content (camvid_mini: 22 MB, a tenth of a second): a
# second or two of reading at most, paid only when no plan is remembered (tasks/plan_cache.py).
CONTENT_LIMIT = 1 << 30


def _files(root: Path, folders: Iterable[Path]) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of every file under ``folders``, sorted, each once."""
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            raise MissingInputError(f"{folder}: folder not found")
        for directory, _, names in os.walk(folder, followlinks=True):
            for name in names:
                path = Path(directory, name)
                found[path.relative_to(root).as_posix()] = path
    return sorted(found.items())


def dataset_fingerprint(root: str | Path, subdirs: Iterable[str] | None = None, *,
                        content: bool | None = None) -> str:
    """SHA-256 over the files under ``root`` (or only under ``subdirs``, relative to it).

    ``content=True`` hashes each file's relative path and bytes, so a copy of the dataset (a
    fresh download, a regenerated demo, a ``cp`` without ``-p``) keeps the fingerprint, and
    with it every training the store holds for it. ``content=False`` hashes each file's
    relative path, size and modification time instead: one ``stat`` a file, cheap for COCO-Stuff
    or Cityscapes, and any rewrite changes it, but so does a copy. ``None`` (the default):
    content for datasets of at most ``CONTENT_LIMIT`` bytes, stat above. The root's own
    location is never part of it: a moved dataset keeps its fingerprint.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"{root}: dataset root not found")
    folders = [root] if subdirs is None else [root / subdir for subdir in subdirs]
    files = [(relative, path, path.stat()) for relative, path in _files(root, folders)]
    if content is None:
        content = sum(stat.st_size for _, _, stat in files) <= CONTENT_LIMIT
    digest = hashlib.sha256(b"content\n" if content else b"stat\n")
    for relative, path, stat in files:
        digest.update(relative.encode() + b"\0")
        if content:
            with path.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
            digest.update(b"\0")
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()
