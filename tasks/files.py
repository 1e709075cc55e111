"""Files that appear whole and are named by their content: hashing, atomic writes, manifests.

One home for what the store, the LLM answer cache and the embedding cache all need: equal
values hash equally (``canonical_json``), a reader never sees a half-written file
(``atomic_write`` / ``atomic_path``), and an artifact's ``manifest.json`` lists the sha256 of
every file beside it (``file_hashes`` / ``manifest_problems``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.errors import ProLabError

MANIFEST = "manifest.json"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


class RepeatedKeyError(ProLabError, ValueError):
    """A JSON object names one key twice: ``json`` would keep the last value without a word."""


def loads_json(text: str, source: str) -> Any:
    """``json.loads`` for what a user wrote: an object that repeats a key is refused, naming the
    key and ``source`` (the file or option it came from), instead of losing the first value."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise RepeatedKeyError(f'{source}: key "{key}" appears twice in one object '
                                       f"(JSON would keep only the last; merge them or rename one)")
            seen[key] = value
        return seen

    return json.loads(text, object_pairs_hook=unique)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode())


def sha256_json(value: Any) -> str:
    """The sha256 of a value's canonical JSON: a content key for dicts of parameters."""
    return sha256_text(canonical_json(value))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target`` to write; renamed onto ``target`` when the block
    succeeds, removed when it fails. Readers see the old file or the new one, never a part."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write(target: Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``target`` whole or not at all."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def file_hashes(directory: Path) -> dict[str, str]:
    """The sha256 of every file under ``directory`` but its manifest, by relative POSIX path."""
    return {
        path.relative_to(directory).as_posix(): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


def manifest_problems(directory: Path, shown_as: str) -> list[str]:
    """What is wrong with an artifact directory, naming its files under ``shown_as`` (a remote
    copy is checked in a local directory but reported by its URL); empty when it matches."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return [f"{shown_as}: no {MANIFEST}"]
    try:
        manifest = json.loads(manifest_path.read_text())
        expected: dict[str, str] = manifest["files"]
    except (ValueError, KeyError, TypeError) as error:
        return [f"{shown_as}/{MANIFEST}: unreadable manifest ({error})"]
    found = file_hashes(directory)
    issues = [f"{shown_as}/{name}: missing" for name in expected if name not in found]
    issues += [f"{shown_as}/{name}: not in the manifest" for name in found if name not in expected]
    issues += [
        f"{shown_as}/{name}: sha256 differs from the manifest"
        for name, digest in expected.items()
        if name in found and found[name] != digest
    ]
    return issues
