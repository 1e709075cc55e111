"""What every fault test asserts of a store afterwards: each artifact matches its manifest, and
no temporary directory became an artifact."""

from __future__ import annotations

from pathlib import Path

from tasks.files import MANIFEST
from tasks.store import TMP_PREFIX, ArtifactStore


def stray_temporaries(root: Path) -> list[Path]:
    """Temporary artifact directories still under the store's stage directories."""
    return sorted(p for p in root.glob(f"*/{TMP_PREFIX}*"))


def assert_store_sound(root: Path, allow_temporaries: bool = True) -> dict[str, list[str]]:
    """Every artifact matches its manifest; no temporary became an artifact. Returns stage -> keys."""
    store = ArtifactStore(root)
    assert store.verify() == {}
    found: dict[str, list[str]] = {}
    for directory in store.iter_artifacts():
        assert (directory / MANIFEST).is_file() and not directory.name.startswith(TMP_PREFIX)
        found.setdefault(directory.parent.name, []).append(directory.name)
    if not allow_temporaries:
        assert stray_temporaries(root) == []
    return found
