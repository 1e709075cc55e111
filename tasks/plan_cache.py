"""Plans remembered between processes, so that an unchanged command plans without importing
what planning reads.

A model stage's plan parses its mmengine config, which imports the plugin, torch, mmseg and
timm (3-8 s on 2 cores), and hashes the demo dataset; a label-space stage's plan imports pandas
or mmseg's class lists. An unchanged rerun would pay all that to find the key it found last
time. A plan depends only on the pipeline's parameters, its inputs' references, the files the
stage read (``StagePlan.sources``), the project's code and the installed libraries. So a plan is
kept in ``<root>/.cache/plans/<name>.json``, named by the hash of the parameters, the inputs and
two stamps (the size and mtime of every module of the project; the installed distributions'
names and versions), with the stat of each source beside it (size, mtime and inode; for a
directory, of every file under it, as DVC's state keeps file stats). It is reused only while
every one still matches: an edited config or descriptor file, a touched dataset file, an edited
module or an upgraded library plans afresh. A plan whose ``sources`` is None is never kept.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import BaseModel

from tasks import PROJECT_ROOT
from tasks.files import atomic_write, sha256_json
from tasks.stage import StagePlan

PLANS = Path(".cache") / "plans"
# The packages whose code a plan runs (flows and csrc plan nothing).
PLANNING_PACKAGES = ("tasks", "prolab_models", "data")
# Coarser than any file system's mtime granularity.
RACY_NS = 2_000_000_000


def _stats(path: Path) -> list[tuple[str, int, int, int]]:
    """(relative path, size, mtime, inode) of a file, or of every file under a directory."""
    if not path.is_dir():
        stat = path.stat()
        return [("", stat.st_size, stat.st_mtime_ns, stat.st_ino)]
    found = []
    for directory, _, names in os.walk(path, followlinks=True):
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                stat = Path(directory, name).stat()
                found.append((Path(directory, name).relative_to(path).as_posix(), stat.st_size, stat.st_mtime_ns,
                              stat.st_ino))
    return sorted(found)


def signature(path: str | Path) -> tuple[str, int]:
    """What a source looks like on disk now, and its newest mtime: a file's size, mtime and
    inode (an editor's save by rename changes the inode), a directory's every file's, hashed;
    ``missing`` for nothing there."""
    try:
        stats = _stats(Path(path))
    except OSError:
        return "missing", 0
    return sha256_json(stats), max((mtime for _, _, mtime, _ in stats), default=0)


@functools.cache
def code_stamp() -> str:
    """The size and mtime of every module of the packages that plan: any edit changes it."""
    entries = []
    for package in PLANNING_PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            stat = path.stat()
            entries.append((path.relative_to(PROJECT_ROOT).as_posix(), stat.st_size, stat.st_mtime_ns))
    return sha256_json(entries)


@functools.cache
def library_stamp() -> str:
    """The Python version and every installed distribution's name and version (the names of
    the ``*.dist-info`` directories on ``sys.path``): an install or upgrade changes it."""
    installed = []
    for entry in sys.path:
        with contextlib.suppress(OSError):
            installed += [name for name in os.listdir(entry or ".") if name.endswith(".dist-info")]
    return sha256_json([sys.version, sorted(installed)])


def remembered_plan(root: Path, stage: str, params: BaseModel, inputs: Mapping[str, str],
                    make: Callable[[], StagePlan]) -> StagePlan:
    """``make()``'s plan for ``stage``, or the one kept under ``root`` for the same parameters,
    inputs, code and libraries while every source it read is unchanged."""
    name = sha256_json({"stage": stage, "params": params.model_dump(mode="json"), "inputs": dict(inputs),
                        "code": code_stamp(), "libraries": library_stamp()})[:32]
    entry = root / PLANS / f"{name}.json"
    kept = _read(entry)
    if kept is not None:
        with contextlib.suppress(OSError):
            os.utime(entry)  # when it was last used: ``prolab gc`` removes plans unused for days
        return kept
    started = time.time_ns()
    plan = make()
    if plan.sources is None:
        return plan
    signatures = {source: signature(source) for source in plan.sources}
    # A source written since planning began may have changed while the plan read it (git's
    # "racily clean" files): such a plan is used once, not kept.
    if all(newest < started - RACY_NS for _, newest in signatures.values()):
        with contextlib.suppress(OSError):  # a read-only store plans every time, as before
            atomic_write(entry, json.dumps({
                "plan": {"stage": plan.stage, "version": plan.version, "params": plan.params,
                         "inputs": plan.inputs, "sources": list(plan.sources)},
                "signatures": {source: digest for source, (digest, _) in signatures.items()},
            }, default=str))
    return plan


def _read(entry: Path) -> StagePlan | None:
    """The kept plan when every source's signature still matches; None otherwise."""
    try:
        kept = json.loads(entry.read_text())
        plan, signatures = kept["plan"], kept["signatures"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if any(signature(source)[0] != expected for source, expected in signatures.items()):
        return None
    return StagePlan(plan["stage"], plan["version"], plan["params"], plan["inputs"], tuple(plan["sources"]))
