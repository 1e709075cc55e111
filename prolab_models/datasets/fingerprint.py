"""A cheap identity for a dataset on disk, for the cache keys of the stages that read it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 1 << 20


def _files(root: Path, folders: Iterable[Path]) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of every file under ``folders``, sorted, each once."""
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: folder not found")
        for directory, _, names in os.walk(folder, followlinks=True):
            for name in names:
                path = Path(directory, name)
                found[path.relative_to(root).as_posix()] = path
    return sorted(found.items())


def dataset_fingerprint(root: str | Path, subdirs: Iterable[str] | None = None, *,
                        content: bool = False) -> str:
    """SHA-256 over the files under ``root`` (or only under ``subdirs``, relative to it).

    By default each file contributes its relative path, size and modification time: one
    ``stat`` a file, so it is cheap even for ADE20K or COCO-Stuff, and any rewrite changes it.
    ``content=True`` hashes the bytes instead, for small datasets that are regenerated
    identically (the demo), so a fresh copy keeps the same fingerprint. The root's own location
    is not part of it: a moved dataset keeps its fingerprint.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset root not found")
    folders = [root] if subdirs is None else [root / subdir for subdir in subdirs]
    digest = hashlib.sha256(b"content\n" if content else b"stat\n")
    for relative, path in _files(root, folders):
        digest.update(relative.encode() + b"\0")
        if content:
            with path.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
            digest.update(b"\0")
        else:
            stat = path.stat()
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()
