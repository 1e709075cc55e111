"""The pipeline's stages, declared once, and the one loop that plans and runs any of them.

Every stage module has four functions: ``plan(params, inputs)`` gives its ``StagePlan`` (its
key, known before any work, from the pipeline's parameters and its inputs' references),
``run(plan, params, inputs, store)`` returns its artifact's directory (computed, or found in
the store), ``reports(directory)`` what the Prefect UI shows of it, and ``run_name(params)``
its task run's name; a module may add ``wanted(params)`` (whether the end-to-end flow runs it:
predict only when given images) and ``status_note(directory)`` (what ``prolab status`` says of
an up-to-date artifact: repair's pairs). ``STAGES`` says which stages exist, in DAG order,
which artifacts each reads (an input's role -> the stage that writes it) and its parameters
model. The flows (end-to-end, label space, one per stage), the Prefect tasks, ``prolab status``
and the CLI's options derive from it, and a test checks prefect.yaml against it. A stage's
module is imported when it is first planned or run, so label-space commands never import
the model half.

Around that loop: plans are remembered in the store (``tasks.plan_cache``), so ``reuse`` finds an
unchanged rerun's artifacts without importing a stage; every run is recorded as one of its
pipeline (``tasks.lineage``), which ``status`` compares with and ``prolab gc`` keeps; and a run
marks what it reads and writes as in use, so that gc leaves it alone.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from pydantic import BaseModel

from tasks.errors import MissingUpstreamError
from tasks.lineage import (
    RunRecord,
    last_done,
    pipeline_name,
    record_run,
    run_records,
    source_of,
)
from tasks.params import (
    ClusterParams,
    DescribeParams,
    EmbedParams,
    EndToEndParams,
    EvaluateParams,
    PredictParams,
    RepairParams,
    TrainParams,
    VerifyParams,
)
from tasks.plan_cache import remembered_plan
from tasks.stage import StagePlan, explain, input_ref
from tasks.store import ArtifactStore


@dataclass(frozen=True)
class Stage:
    """One stage: its module (``plan``, ``run``, ``reports``, ``run_name``), the artifacts it
    reads (role -> stage), its parameters model, and how often Prefect retries it."""

    name: str
    module_name: str
    inputs: Mapping[str, str]
    params: type[BaseModel]
    retries: int = 0
    retry_delay_seconds: float = field(default=0, compare=False)
    # Whether the module has a ``status_note``: ``prolab status`` imports no other stage's module,
    # so that remembered plans spare it sklearn, the LLM client and the model stack.
    notes: bool = field(default=False, compare=False)

    @property
    def module(self) -> ModuleType:
        return importlib.import_module(self.module_name)

    def plan(self, params: EndToEndParams, inputs: Mapping[str, str]) -> StagePlan:
        return self.module.plan(params, inputs)

    def run(self, plan: StagePlan, params: EndToEndParams, inputs: Mapping[str, Path],
            store: ArtifactStore) -> Path:
        return self.module.run(plan, params, inputs, store)

    def wanted(self, params: EndToEndParams) -> bool:
        """Whether the end-to-end flow runs it: the module's ``wanted(params)`` where it has one
        (predict: only when given images), else always."""
        check = getattr(self.module, "wanted", None)
        return check(params) if check is not None else True

    def status_note(self, directory: Path) -> str:
        """What ``prolab status`` adds about an up-to-date artifact: the module's
        ``status_note(directory)`` where it has one (repair: the pairs it repaired)."""
        return self.module.status_note(directory) if self.notes else ""


STAGES: tuple[Stage, ...] = (
    Stage("describe", "tasks.label_space.describe", {}, DescribeParams, retries=1, retry_delay_seconds=5),
    Stage("verify", "tasks.label_space.verify", {"descriptions": "describe"}, VerifyParams),
    Stage("embed", "tasks.label_space.embed", {"descriptions": "verify"}, EmbedParams),
    Stage("cluster", "tasks.label_space.cluster", {"embeddings": "embed"}, ClusterParams),
    Stage("repair", "tasks.label_space.repair", {"label_space": "cluster", "verification": "verify"}, RepairParams,
          notes=True),
    Stage("train", "tasks.model.train", {"label_space": "repair"}, TrainParams),
    Stage("evaluate", "tasks.model.evaluate", {"run": "train", "label_space": "repair"}, EvaluateParams),
    Stage("predict", "tasks.model.predict", {"run": "train"}, PredictParams),
)
BY_NAME: dict[str, Stage] = {stage.name: stage for stage in STAGES}
# The label-space flow's stages (parameters: ``LabelSpaceParams``); the last one's artifact is
# the label space that the model stages read.
LABEL_SPACE_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES if s.module_name.startswith("tasks.label_space."))
LABEL_SPACE = LABEL_SPACE_STAGES[-1]


def end_to_end(params: EndToEndParams) -> list[str]:
    """The stages the end-to-end flow runs with ``params``, in DAG order."""
    return [s.name for s in STAGES if s.wanted(params)]


def stage(name: str) -> Stage:
    return BY_NAME[name]


def upstream(name: str) -> list[str]:
    """``name`` and every stage it reads from, directly or not, in DAG order."""
    needed = {name}
    for current in reversed(STAGES):
        if current.name in needed:
            needed.update(current.inputs.values())
    return [s.name for s in STAGES if s.name in needed]


def plan_stages(params: EndToEndParams, names: Sequence[str], given: Mapping[str, Path] | None = None,
                store: ArtifactStore | None = None) -> dict[str, StagePlan]:
    """The plans of ``names`` in DAG order. Each input comes from a planned stage, or from
    ``given`` (stage -> a directory or file from outside this run, named by ``input_ref``).
    Planning checks every parameter: bad input is refused before any stage runs. With a
    ``store``, plans are remembered there (``tasks.plan_cache``): an unchanged plan is read back
    without importing its stage."""
    return _plan(params, names, given_refs(given or {}), store)


def given_refs(given: Mapping[str, Path]) -> dict[str, str]:
    """How the plans name inputs from outside the run (``tasks.stage.input_ref``)."""
    return {name: input_ref(path) for name, path in given.items()}


def _plan(params: EndToEndParams, names: Sequence[str], refs: Mapping[str, str],
          store: ArtifactStore | None) -> dict[str, StagePlan]:
    plans: dict[str, StagePlan] = {}
    for current in (s for s in STAGES if s.name in names):
        inputs = {}
        for role, source in current.inputs.items():
            if source in plans:
                inputs[role] = plans[source].ref()
            elif source in refs:
                inputs[role] = refs[source]
            else:
                raise ValueError(f"{current.name} reads {source}, which is neither planned nor given")
        if store is None:
            plans[current.name] = current.plan(params, inputs)
        else:
            plans[current.name] = remembered_plan(store.root, current.name, params, inputs,
                                                  functools.partial(current.plan, params, inputs))
    return plans


def pipeline_of(params: EndToEndParams, names: Sequence[str], given: Mapping[str, Path], refs: Mapping[str, str],
                records: Sequence[RunRecord]) -> str:
    """The pipeline a run of ``names`` belongs to (``tasks.lineage``): its descriptions' source
    (the describe parameters when the run builds the label space, else the run that made its
    given label space) and, with model stages, the model config."""
    if any(name in LABEL_SPACE_STAGES for name in names):
        describe = params.label_space.describe
        source = f"dataset {describe.dataset}" if describe.dataset is not None else \
            f"descriptors {describe.descriptors.expanduser().resolve()}"
    else:
        first = sorted(given, key=lambda name: name != LABEL_SPACE)  # the label space's lineage first
        source = next((found for name in first if (found := source_of(refs[name], records))), None) or \
            f"{'label space' if first[0] == LABEL_SPACE else first[0]} {given[first[0]].expanduser().resolve()}"
    has_model = any(name not in LABEL_SPACE_STAGES for name in names)
    return pipeline_name(source, params.train.config if has_model else None)


Execute = Callable[[Stage, StagePlan, EndToEndParams, Mapping[str, Path], ArtifactStore], Path]


def run_in_process(stage: Stage, plan: StagePlan, params: EndToEndParams, inputs: Mapping[str, Path],
                   store: ArtifactStore) -> Path:
    return stage.run(plan, params, inputs, store)


def _stored(store: ArtifactStore, refs: Mapping[str, str], given: Mapping[str, Path]) -> list[str]:
    """The given inputs that are artifacts of ``store`` (by reference), which a run must keep."""
    return [ref for name, ref in refs.items() if given[name].expanduser().resolve().parent.parent == store.root]


def run_stages(params: EndToEndParams, store: ArtifactStore, names: Sequence[str],
               given: Mapping[str, Path] | None = None, execute: Execute = run_in_process) -> dict[str, Path]:
    """Plan ``names`` (all of them first), then run them in DAG order with ``execute`` (this
    process, or a Prefect task); return each one's artifact directory. The run is recorded as
    one of its pipeline (``tasks.lineage``), and what it reads and writes is in use meanwhile
    (``prolab gc`` leaves it alone)."""
    given = dict(given or {})
    refs = given_refs(given)
    plans = _plan(params, names, refs, store)
    pipeline = pipeline_of(params, names, given, refs, run_records(store) if given else [])
    paths: dict[str, Path] = dict(given)
    done: list[str] = []
    with store.using([plan.ref() for plan in plans.values()] + _stored(store, refs, given)):
        record_run(store, pipeline, plans, refs, done)
        try:
            for name, plan in plans.items():
                current = stage(name)
                inputs = {role: paths[source] for role, source in current.inputs.items()}
                paths[name] = execute(current, plan, params, inputs, store)
                done.append(name)
        finally:
            record_run(store, pipeline, plans, refs, done)
    return {name: paths[name] for name in plans}


def reuse(params: EndToEndParams, store: ArtifactStore, names: Sequence[str],
          given: Mapping[str, Path] | None = None) -> dict[str, Path] | None:
    """The artifacts of ``names`` when the store holds every one already: an unchanged rerun's
    answer, found without running a stage (with remembered plans, without importing one). None
    as soon as one is missing; bad input is refused as by ``plan_stages``. A complete answer is
    recorded as a run of its pipeline."""
    given = dict(given or {})
    refs = given_refs(given)
    plans = _plan(params, names, refs, store)
    found = {}
    for name, plan in plans.items():
        artifact = store.get(plan.stage, plan.key)
        if artifact is None:
            return None
        found[name] = artifact.path
    record_run(store, pipeline_of(params, names, given, refs, run_records(store) if given else []), plans, refs, plans)
    return found


@dataclass(frozen=True)
class StageStatus:
    """What ``prolab status`` says of a stage: its plan, whether it is up to date, and why not."""

    name: str
    plan: StagePlan
    fresh: bool
    why: str


def status(params: EndToEndParams, store: ArtifactStore, names: Sequence[str]) -> tuple[str, list[StageStatus]]:
    """The pipeline a run of ``names`` belongs to, and each stage's status against the last run of
    that pipeline in which the stage finished (``tasks.stage.explain``)."""
    plans = plan_stages(params, names, store=store)
    records = run_records(store)
    pipeline = pipeline_of(params, names, {}, {}, records)
    rows = []
    for name, plan in plans.items():
        last = last_done(records, pipeline, name)
        rows.append(StageStatus(name, plan, *explain(store, plan, last[1] if last else None)))
    return pipeline, rows


def stored_inputs(params: EndToEndParams, store: ArtifactStore, name: str) -> dict[str, Path]:
    """The artifacts that stage ``name`` reads, found in the store by the keys ``params`` give
    its upstream stages. One that is absent is not computed behind the user's back: the error
    names the first stage of the chain that has to run."""
    plans = plan_stages(params, upstream(name)[:-1], store=store)
    found = {}
    for source in stage(name).inputs.values():
        artifact = store.get(source, plans[source].key)
        if artifact is None:
            first = next(s for s in plans if s in upstream(source) and store.get(s, plans[s].key) is None)
            raise MissingUpstreamError(
                f"{name} reads the {source} artifact {plans[source].ref()}, which is not in {store.location}: "
                f"run the {first} stage first with the same parameters (deployment '{first}/{first}', "
                f"or 'end-to-end/end-to-end' for everything)")
        found[source] = artifact.path
    return found
