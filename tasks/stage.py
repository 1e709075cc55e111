"""What every stage shares: a plan (its key, computed before any work) and materialisation.

A plan is known without running anything, so ``prolab status`` and Prefect's cache
policy both read the same key that the stage will write under.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tasks.files import MANIFEST, canonical_json, sha256_file, sha256_json
from tasks.store import ArtifactStore, artifact_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StagePlan:
    """A stage's identity: what determines its output, and so its key.

    ``sources`` names the files and directories whose content the plan read (a descriptor
    file, a config and its bases, a data root): a plan is remembered while none of them changes
    (``tasks/plan_cache.py``). None, the default, says that the plan may read what cannot be
    checked that way (a config that reads the environment, a stage that has not said what it
    reads), so it is made afresh every time: a stage opts in by naming its sources, () for none.
    """

    stage: str
    version: str
    params: Mapping[str, Any]
    inputs: Mapping[str, str] = field(default_factory=dict)
    sources: tuple[str, ...] | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return artifact_key(self.stage, self.version, self.params, self.inputs)

    def ref(self) -> str:
        """How a downstream stage names this one among its inputs."""
        return f"{self.stage}/{self.key}"


class UndeclaredParameterError(LookupError):
    """A stage declares that it reads a parameter the parameters model does not have: the
    stage's declaration is wrong, not the user's input."""


def declared_params(params: BaseModel, reads: Sequence[str], unkeyed: Sequence[str] = ()) -> dict[str, Any]:
    """What a stage's key hashes of the pipeline's parameters: every field under each dotted path
    it declares it reads (a section, ``"label_space.verify"``, or one field,
    ``"label_space.embed.embedder"``), by its full path and as JSON gives it back, less the fields
    it declares ``unkeyed`` (how it runs, not what it computes: concurrency, retries). A field
    added to a section a stage reads is in its key without an edit to the stage, as DVC hashes a
    stage's declared params; ``prolab status`` names the field that changed."""
    keyed: dict[str, Any] = {}
    for path in reads:
        parent, _, name = path.rpartition(".")
        section = _section(params, parent) if parent else params
        if name not in type(section).model_fields:
            raise UndeclaredParameterError(f"{path!r}: {type(section).__name__} has no field {name!r}")
        value = getattr(section, name)
        keyed.update(_fields(value, path) if isinstance(value, BaseModel)
                     else {path: section.model_dump(mode="json", include={name})[name]})
    for path in unkeyed:
        if path not in keyed:
            raise UndeclaredParameterError(f"unkeyed {path!r} is no field of the sections read ({', '.join(reads)})")
        del keyed[path]
    return keyed


def _section(params: BaseModel, path: str) -> BaseModel:
    for name in path.split("."):
        params = getattr(params, name, None)
        if not isinstance(params, BaseModel):
            raise UndeclaredParameterError(f"{path!r}: no such parameters section")
    return params


def _fields(section: BaseModel, prefix: str) -> dict[str, Any]:
    """Every field of a section and of its sub-sections, by dotted path."""
    found: dict[str, Any] = {}
    dumped = section.model_dump(mode="json")
    for name in type(section).model_fields:
        value = getattr(section, name)
        found.update(_fields(value, f"{prefix}.{name}") if isinstance(value, BaseModel)
                     else {f"{prefix}.{name}": dumped[name]})
    return found


def input_ref(path: Path) -> str:
    """How a stage names an input given as a path: an artifact of the store by its
    ``<stage>/<key>`` (from its manifest), anything else by its content (a file's sha256, or the
    sha256 of a directory's top-level file digests)."""
    path = path.expanduser().resolve()
    manifest = path / MANIFEST
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        return f"{data['stage']}/{data['key']}"
    if path.is_file():
        return f"sha256:{sha256_file(path)}"
    digests = {p.name: sha256_file(p) for p in sorted(path.iterdir()) if p.is_file()}
    return "sha256:" + sha256_json(digests)


def materialize(store: ArtifactStore, plan: StagePlan, build: Callable[[Path], None]) -> Path:
    """The artifact for ``plan``: reused when present and intact, else built by ``build(tmp_dir)``."""
    found = store.get(plan.stage, plan.key)
    if found is not None:
        log.info("%s: up to date (%s)", plan.stage, found.path)
        return found.path
    log.info("%s: computing %s", plan.stage, plan.key)
    with store.create(plan.stage, plan.key, version=plan.version, params=plan.params, inputs=plan.inputs) as tmp:
        build(tmp)
    return store.path(plan.stage, plan.key)


def explain(store: ArtifactStore, plan: StagePlan, previous: Mapping[str, Any] | None) -> tuple[bool, str]:
    """Whether a stage is up to date and, if not, why, like ``dvc status``: ``previous`` is the
    stage's plan in the last run of the same pipeline (``tasks.lineage``), None if it never ran."""
    found = store.get(plan.stage, plan.key)
    if found is not None:
        return True, "up to date"
    if previous is None:
        return False, "never run"
    previous, now = _plain(previous), _plain({"params": plan.params, "inputs": plan.inputs})
    reasons = []
    if previous.get("version") != plan.version:
        reasons.append(f"stage version {previous.get('version')} -> {plan.version}")
    reasons += _diff("parameter", previous.get("params", {}), now["params"])
    reasons += _diff("input", previous.get("inputs", {}), now["inputs"])
    if not reasons:
        return False, "unchanged since the last run, but its artifact is gone (removed or damaged): it will be recomputed"
    return False, "changed since the last run: " + "; ".join(reasons)


def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples as lists, paths as text), so that a plan compares
    equal to its record."""
    return json.loads(canonical_json(value))


def _diff(kind: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    changes = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before != after:
            changes.append(f"{kind} {name}: {_short(before)} -> {_short(after)}")
    return changes


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."
