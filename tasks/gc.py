"""``prolab gc``: what nothing needs any more, listed with sizes, then removed with ``--yes``
(DVC's ``gc``).

Removing data is the one thing here that can lose a user's work, so everything is kept unless a
rule below lets it go, and each kept item that could have gone says why it stays.

- Artifacts (``<stage>/<key>``) are kept when reachable, through the inputs their manifests
  name, from a root: an artifact named with ``--keep``; every artifact of the latest run, and of
  the latest complete run, of each pipeline (``tasks.lineage``); any artifact created or used
  by a run in the last ``keep_days`` days; for a URL root, any artifact the remote lacks (the
  cache holds the only copy). One a running pipeline uses (its shared lock) is never removed.
  The others are superseded: they go, with their Prefect cache records, and a run that needs
  one again recomputes it, as for any missing key.
- Work dirs (training's resumable ``<stage>/.work-<key>``): kept while a process holds the key's
  writer lock; removed when the run finished (``<stage>/<key>`` exists) or nothing wrote to
  it for ``keep_days`` days; otherwise kept, for the same command to resume.
- Temporary directories (``.tmp-*``) whose writer process has ended.
- Quarantined copies (``.quarantine/``): removed once their key was recomputed, or after
  ``keep_days`` days; until then they are the only copy of that work, damaged as it is.
- Prefect cache records whose artifact is gone, lock files no process holds, plans unused for
  ``keep_days`` days, and run records none of whose artifacts remain (unless the latest of
  their pipeline).
- For a URL root, the remote's abandoned uploads: ``<stage>/<key>/`` directories without a
  manifest (a publisher killed mid-upload) and staged manifests, once nothing wrote to them for
  ``keep_days`` days (a younger one may be an upload in progress on another machine). The
  remote's artifacts are the team's: gc removes none of them.

Kept as they are: the LLM answer and embedding caches (``.cache/llm``, ``.cache/embeddings``),
which save LLM calls and encoder time and are small; delete them by hand.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import ProLabError
from tasks.files import MANIFEST
from tasks.lineage import RunRecord, run_records
from tasks.plan_cache import PLANS
from tasks.store import (
    LOCKS,
    QUARANTINE,
    RESULTS_DIR,
    TMP_PREFIX,
    WORK_PREFIX,
    ArtifactStore,
    flock,
    tmp_name,
    writer_is_dead,
)

DAY = 86400.0
DEFAULT_KEEP_DAYS = 7.0


class GCError(ProLabError, ValueError):
    """A ``--keep`` that names no artifact of the store."""


@dataclass(frozen=True)
class Entry:
    """One thing gc looked at: what it is, where (a path, or a URL on the remote), its size in
    bytes, whether it goes, and why."""

    kind: str
    path: Path | str
    size: int
    remove: bool
    why: str


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _size(path: Path) -> int:
    if not path.is_dir():
        return path.lstat().st_size if path.exists() else 0
    return sum((Path(d, n).lstat().st_size for d, _, names in os.walk(path) for n in names), 0)


def _newest_write(path: Path) -> float:
    """The latest mtime of a directory or anything under it."""
    newest = path.stat().st_mtime
    for directory, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                newest = max(newest, Path(directory, name).lstat().st_mtime)
    return newest


def _days(seconds: float) -> str:
    days = seconds / DAY
    return f"{days:.1f} days" if days >= 1 else f"{seconds / 3600:.1f} hours"


@contextlib.contextmanager
def _claimed(path: Path) -> Iterator[bool]:
    """Hold ``path``'s lock exclusively for the block, if no process holds it (yields whether it
    could); the lock file is removed before it is released, as the claim is over."""
    try:
        descriptor = flock(path, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(descriptor)


def _is_held(path: Path) -> bool:
    """Whether a process holds the lock file ``path`` (without leaving one behind)."""
    if not path.exists():
        return False
    try:
        descriptor = flock(path, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return True
    os.close(descriptor)
    return False


class Collector:
    """One gc pass over a store: ``entries()`` decides, ``remove()`` acts on what may go,
    checking each lock again as it removes."""

    def __init__(self, store: ArtifactStore, keep: Sequence[Path] = (), keep_days: float = DEFAULT_KEEP_DAYS,
                 now: float | None = None) -> None:
        self.store = store
        self.keep_days = keep_days
        self.now = time.time() if now is None else now
        self.records = run_records(store)
        self.keep = {self._ref_of(path): path for path in keep}

    def _ref_of(self, path: Path) -> str:
        """The ``<stage>/<key>`` that ``path`` (an artifact directory, or a file inside one) belongs to."""
        resolved = path.expanduser().resolve()
        for candidate in (resolved, *resolved.parents):
            if candidate.parent.parent == self.store.root and (candidate / MANIFEST).is_file():
                return f"{candidate.parent.name}/{candidate.name}"
        raise GCError(f"--keep {path}: not an artifact of the store {self.store.root} "
                      f"(expected <root>/<stage>/<key>, or a file inside one)")

    def _young(self, moment: float) -> bool:
        return self.now - moment < self.keep_days * DAY

    # --- artifacts -------------------------------------------------------------------------

    def _artifacts(self) -> dict[str, Path]:
        return {f"{d.parent.name}/{d.name}": d for d in self.store.iter_artifacts()}

    def _last_used(self, artifacts: dict[str, Path]) -> dict[str, float]:
        """When each artifact was created (its directory's mtime) or last used by a recorded run."""
        last_used = {ref: path.stat().st_mtime for ref, path in artifacts.items()}
        for record in self.records:
            for ref in record.refs() & last_used.keys():
                last_used[ref] = max(last_used[ref], record.time)
        return last_used

    def _roots(self, artifacts: dict[str, Path]) -> dict[str, str]:
        """Each root artifact's reason to stay."""
        roots: dict[str, str] = {ref: f"kept with --keep {path}" for ref, path in self.keep.items()}
        latest: dict[str, RunRecord] = {}
        complete: dict[str, RunRecord] = {}
        for record in self.records:  # oldest first
            latest[record.pipeline] = record
            if all(stage.get("done") for stage in record.stages.values()):
                complete[record.pipeline] = record
        for label, runs in (("latest run", latest), ("latest complete run", complete)):
            for record in runs.values():
                when = dt.datetime.fromtimestamp(record.time).strftime("%Y-%m-%d %H:%M")
                for ref in record.refs():
                    roots.setdefault(ref, f"in the {label} of pipeline '{record.pipeline}' ({when})")
        for ref, moment in self._last_used(artifacts).items():
            if self._young(moment):
                roots.setdefault(ref, f"created or used {_days(self.now - moment)} ago (kept for {self.keep_days:g} days)")
        if self.store.remote is not None:
            published = {f"{stage}/{key}" for stage, key in self.store.remote.artifacts()}
            for ref in artifacts.keys() - published:
                roots.setdefault(ref, f"not on {self.store.location} yet: this copy is the only one")
        return roots

    def _reachable(self, artifacts: dict[str, Path]) -> dict[str, str]:
        """Every artifact reachable from a root, through its manifest's inputs, with why it stays."""
        kept = self._roots(artifacts)
        queue = [ref for ref in kept if ref in artifacts]
        while queue:
            ref = queue.pop()
            try:
                inputs = json.loads((artifacts[ref] / MANIFEST).read_text()).get("inputs", {})
            except (OSError, ValueError, AttributeError):
                continue  # a damaged manifest: its next lookup quarantines it
            for value in inputs.values() if isinstance(inputs, dict) else []:
                if isinstance(value, str) and value in artifacts and value not in kept:
                    kept[value] = f"an input of {ref}"
                    queue.append(value)
        return kept

    def _artifact_entries(self) -> list[Entry]:
        artifacts = self._artifacts()
        kept, last_used = self._reachable(artifacts), self._last_used(artifacts)
        entries = []
        for ref, path in sorted(artifacts.items()):
            stage, _, key = ref.partition("/")
            if ref in kept:
                entries.append(Entry("artifact", path, _size(path), False, kept[ref]))
            elif _is_held(self.store.lock_file(stage, key, "use")):
                entries.append(Entry("artifact", path, _size(path), False, "in use by a running pipeline"))
            else:
                entries.append(Entry("artifact", path, _size(path), True, f"superseded: in no kept run, created "
                                     f"or last used {_days(self.now - last_used[ref])} ago"))
        return entries

    # --- work in progress ------------------------------------------------------------------

    def _work_entries(self) -> list[Entry]:
        entries = []
        for stage_dir in self.store.stage_dirs():
            for path in sorted(stage_dir.glob(f"{TMP_PREFIX}*")):
                dead = writer_is_dead(path.name)
                entries.append(Entry("temporary", path, _size(path), dead,
                                     "its writer has ended" if dead else "its writer may still be running"))
            for path in sorted(stage_dir.glob(f"{WORK_PREFIX}*")):
                key = path.name[len(WORK_PREFIX):]
                if _is_held(self.store.lock_file(stage_dir.name, key)):
                    entries.append(Entry("work dir", path, _size(path), False, "a running process holds its lock"))
                else:
                    entries.append(self._leftover("work dir", path, stage_dir.name, key, _newest_write(path),
                                                  "its run finished", "its writer is gone and nothing wrote to it",
                                                  "resumable: its writer is gone; the same command resumes it"))
        return entries

    def _quarantine_entries(self) -> list[Entry]:
        directory = self.store.root / QUARANTINE
        entries = []
        for path in sorted(directory.iterdir()) if directory.is_dir() else []:
            parts = path.name.rsplit("-", 2)  # <stage>-<key>-<random>
            if len(parts) != 3:
                entries.append(Entry("quarantined copy", path, _size(path), False, "not named as the store names one"))
                continue
            stage, key, _ = parts
            entries.append(self._leftover("quarantined copy", path, stage, key, path.stat().st_mtime,
                                          "damaged, and recomputed since", "damaged, and quarantined",
                                          "damaged, not recomputed yet: the only copy of that work"))
        return entries

    def _leftover(self, kind: str, path: Path, stage: str, key: str, written: float, finished: str, old: str,
                  young: str) -> Entry:
        """Work left over for ``<stage>/<key>`` (a work dir, a quarantined copy): it goes once that
        artifact exists, or when nothing wrote to it for ``keep_days``; until then it stays."""
        idle = _days(self.now - written)
        if self.store.path(stage, key).is_dir():
            return Entry(kind, path, _size(path), True, f"{finished}: {stage}/{key} holds the result")
        if not self._young(written):
            return Entry(kind, path, _size(path), True, f"{old} for {idle}")
        return Entry(kind, path, _size(path), False,
                     f"{young} (last written {idle} ago; gc removes it after {self.keep_days:g} days)")

    # --- bookkeeping -----------------------------------------------------------------------

    def _bookkeeping_entries(self, removed: set[Path]) -> list[Entry]:
        """Records, locks and plans that no longer serve anything; ``removed``: the artifacts going."""
        root = self.store.root
        remaining = {ref for ref in self._artifacts() if self.store.root / ref not in removed}
        entries = []
        results = root / RESULTS_DIR
        for path in sorted(results.iterdir()) if results.is_dir() else []:
            stage, _, key = path.name.rpartition("-")
            if stage and f"{stage}/{key}" not in remaining:
                entries.append(Entry("Prefect record", path, _size(path), True, f"its artifact {stage}/{key} is not kept"))
        latest = {record.pipeline: record.path for record in self.records}
        for record in self.records:
            if record.path is not None and record.path not in latest.values() and not record.refs() & remaining:
                entries.append(Entry("run record", record.path, _size(record.path), True,
                                     f"an old run of '{record.pipeline}' none of whose artifacts remain"))
        plans = root / PLANS
        for path in sorted(plans.glob("*.json")) if plans.is_dir() else []:
            if not self._young(path.stat().st_mtime):
                entries.append(Entry("plan", path, _size(path), True,
                                     f"unused for {_days(self.now - path.stat().st_mtime)}"))
        locks = root / LOCKS
        for path in sorted(locks.iterdir()) if locks.is_dir() else []:
            if not _is_held(path):
                entries.append(Entry("lock file", path, _size(path), True, "no process holds it"))
        return entries

    def _remote_entries(self) -> list[Entry]:
        if self.store.remote is None:
            return []
        entries = []
        for url, size, modified in self.store.remote.uncommitted():
            if modified is not None and not self._young(modified):
                entries.append(Entry("remote upload", url, size, True,
                                     f"abandoned: no manifest, nothing written for {_days(self.now - modified)}"))
            else:
                why = "cannot tell its age" if modified is None else f"written {_days(self.now - modified)} ago"
                entries.append(Entry("remote upload", url, size, False,
                                     f"not committed, but {why}: may be an upload in progress on another machine"))
        return entries

    def entries(self) -> list[Entry]:
        """Everything gc looked at, in the order ``remove`` acts on it."""
        found = self._work_entries() + self._artifact_entries() + self._quarantine_entries()
        removed = {Path(e.path) for e in found if e.remove and e.kind == "artifact"}
        return found + self._bookkeeping_entries(removed) + self._remote_entries()

    # --- removal ---------------------------------------------------------------------------

    def remove(self, entry: Entry) -> bool:
        """Remove what ``entry`` names if it may still go; whether it went. An artifact goes only
        while gc holds its use lock (no pipeline starts using it meanwhile), first renamed to a
        temporary name so that no reader ever sees part of it; a work dir only under its writer lock."""
        if not entry.remove:
            return False
        if entry.kind == "remote upload":
            assert self.store.remote is not None
            self.store.remote.remove(str(entry.path))
            return True
        path = Path(entry.path)
        if entry.kind == "artifact":
            stage, key = path.parent.name, path.name
            with _claimed(self.store.lock_file(stage, key, "use")) as claimed:
                if not claimed:
                    return False
                doomed = path.parent / tmp_name(key)
                path.rename(doomed)  # atomic: readers see the whole artifact, or none
                (self.store.root / RESULTS_DIR / f"{stage}-{key}").unlink(missing_ok=True)
                shutil.rmtree(doomed)
            return True
        if entry.kind == "work dir":
            key = path.name[len(WORK_PREFIX):]
            with _claimed(self.store.lock_file(path.parent.name, key)) as claimed:
                if claimed:
                    shutil.rmtree(path)
                return claimed
        if entry.kind == "lock file":
            with _claimed(path) as claimed:
                return claimed
        if entry.kind == "temporary" and not writer_is_dead(path.name):
            return False
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        return True
