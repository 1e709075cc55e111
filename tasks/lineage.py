"""Runs and the pipelines they belong to: what ``prolab status`` compares with, and what
``prolab gc`` keeps.

A pipeline is named by where its classes' descriptions come from, a dataset (``dataset demo``)
or else a descriptor file (``descriptors /data/cityscapes.json``), and, when the run has model
stages, by the model config (``dataset demo · config demo``). Two runs that differ in K, the
embedder, the LLM, a descriptor file's content or a training override are two runs of one
pipeline, and status names what changed between them; another dataset, descriptor file or
config is another pipeline, with a history of its own. A run on a given label space belongs to
the pipeline whose run made that label space (or, for a directory from elsewhere, to
``label space <path>``).

Every run of the registry's stages (``tasks.registry.run_stages``: the flows, so every command
and deployment, and an unchanged rerun that only found its artifacts) leaves a record in
``<root>/.runs/``: its pipeline, when it last ran, each stage's plan (key, version, parameters,
inputs) with whether the stage finished, and the inputs given from outside the run. A record is
named by the hash of its pipeline and keys, so running the same keys again updates one record
instead of adding one. For a URL root the records live in the machine's cache and are
published to ``<url>/.runs/``, so every machine sees the shared store's history.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.errors import ArtifactError
from tasks.files import atomic_write, canonical_json, sha256_json
from tasks.stage import StagePlan
from tasks.store import ArtifactStore

log = logging.getLogger(__name__)

RUNS = ".runs"
CONFIG_MARK = " · config "


@dataclass(frozen=True)
class RunRecord:
    """One run of a pipeline: ``stages`` maps each stage to its plan (``key``, ``version``,
    ``params``, ``inputs``) and ``done``; ``given`` maps a stage to the reference of an input
    from outside the run; ``time`` is when it last ran (seconds since the epoch)."""

    pipeline: str
    time: float
    stages: Mapping[str, Mapping[str, Any]]
    given: Mapping[str, str]
    path: Path | None = None

    @property
    def source(self) -> str:
        """Where its descriptions came from: the pipeline's name without its model config."""
        return self.pipeline.split(CONFIG_MARK)[0]

    def refs(self) -> set[str]:
        """Every artifact it read or wrote, as ``<stage>/<key>``."""
        return {f"{name}/{stage['key']}" for name, stage in self.stages.items()} | set(self.given.values())

    def done(self, stage: str) -> Mapping[str, Any] | None:
        """The plan of ``stage`` if it finished in this run."""
        plan = self.stages.get(stage)
        return plan if plan is not None and plan.get("done") else None


def pipeline_name(source: str, config: str | None) -> str:
    return source if config is None else f"{source}{CONFIG_MARK}{config}"


def record_run(store: ArtifactStore, pipeline: str, plans: Mapping[str, StagePlan], given: Mapping[str, str],
               done: Iterable[str]) -> None:
    """Record (or refresh) a run; stages finished in an earlier run of the same keys stay done."""
    plans = dict(plans)
    name = sha256_json({"pipeline": pipeline, "keys": {n: p.key for n, p in plans.items()}, "given": dict(given)})
    path = store.root / RUNS / f"{name[:24]}.json"
    finished = set(done)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        finished |= {n for n, stage in json.loads(path.read_text())["stages"].items() if stage.get("done")}
    record = {
        "pipeline": pipeline,
        "time": time.time(),
        "stages": {n: {"key": p.key, "version": p.version, "params": p.params, "inputs": p.inputs,
                       "done": n in finished} for n, p in plans.items()},
        "given": dict(given),
    }
    text = canonical_json(record)
    try:  # history only: a store this process cannot write (a colleague's, read-only) still serves its hits
        atomic_write(path, text)
        if store.remote is not None:
            store.remote.put_bytes(f"{RUNS}/{path.name}", text.encode())
    except (OSError, ArtifactError) as error:
        log.warning("run of %s not recorded in %s: %s", pipeline, store.location, error)


def _parse(text: str | bytes, path: Path | None) -> RunRecord | None:
    try:
        data = json.loads(text)
        return RunRecord(data["pipeline"], float(data["time"]), data["stages"], data["given"], path)
    except (ValueError, KeyError, TypeError):
        return None  # a record someone damaged: history lost, nothing else


def run_records(store: ArtifactStore) -> list[RunRecord]:
    """Every readable record, oldest first: this store's and, for a URL root, the remote's."""
    found: dict[str, RunRecord] = {}
    directory = store.root / RUNS
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        with contextlib.suppress(OSError):
            if (record := _parse(path.read_text(), path)) is not None:
                found[path.name] = record
    if store.remote is not None:
        for name, text in store.remote.read_matching(f"{RUNS}/*.json").items():
            record = _parse(text, None)
            if record is not None and (name not in found or found[name].time < record.time):
                found[name] = record
    return sorted(found.values(), key=lambda record: record.time)


def last_done(records: Iterable[RunRecord], pipeline: str, stage: str) -> tuple[RunRecord, Mapping[str, Any]] | None:
    """The latest run of ``pipeline`` in which ``stage`` finished, and that stage's plan."""
    for record in sorted(records, key=lambda r: r.time, reverse=True):
        if record.pipeline == pipeline and (plan := record.done(stage)) is not None:
            return record, plan
    return None


def source_of(ref: str, records: Iterable[RunRecord]) -> str | None:
    """The source of the latest pipeline whose run wrote the artifact ``ref``."""
    for record in sorted(records, key=lambda r: r.time, reverse=True):
        if any(f"{name}/{stage['key']}" == ref for name, stage in record.stages.items()):
            return record.source
    return None
