"""What parameters and inputs alone show cannot run, refused before any stage runs.

The command line calls ``preflight`` before it creates a flow run, and every flow calls it as
its first step (a deployment run does not pass through the command line). So K beyond the
descriptions of a descriptors file, an embedder that is not there, a label space whose classes
are not the dataset's, held-out classes that are not the label space's, a config that cannot
be built and a Slurm launch where srun is missing are refused in seconds, with the message the
stage would have given after describe, verify and embed had run, and a refused command leaves
no failed flow run. An LLM server that describe or repair will ask must list its models
(``GET /models``) within 5 s: a dead ``--llm`` URL is named at once, not after the client's
retries (109 s). Given a store, that is asked only while one of those stages has no artifact
there, so a dead server does not stop a run that asks it nothing. No check loads a model or
reads a dataset; an unchanged rerun, which the command line answers without a flow run, makes
none. What an LLM must write first (how many descriptions it gives) is checked by the stage
that meets it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tasks.params import LOCAL_LLM, DescribeParams, EndToEndParams, LabelSpaceParams
from tasks.registry import LABEL_SPACE, LABEL_SPACE_STAGES, plan_stages
from tasks.store import ArtifactStore

# The data loader whose dataset each model stage reads.
LOADERS = {"train": "train_dataloader", "evaluate": "test_dataloader"}


def preflight(params: EndToEndParams, names: Sequence[str], given: Mapping[str, Path] | None = None,
              store: ArtifactStore | None = None) -> None:
    """Refuse what running the stages ``names`` with ``params`` would be refused, as far as the
    parameters and inputs tell; ``given``: the inputs from outside the run (stage -> directory
    or file), as ``tasks.registry.run_stages`` takes them; ``store``: where the run looks its
    artifacts up (None: every stage is taken to run)."""
    given = dict(given or {})
    if _asks_llm_server(params, names, given, store):
        check_llm_endpoint(params.label_space.describe)
    if "cluster" in names:
        check_cluster_k(params.label_space)
    if _embeds(params.label_space, names):
        from tasks.label_space.embed import check_embedder

        check_embedder(params.label_space.embed.embedder)
    if any(name in LOADERS for name in names):
        check_model_inputs(params, names, given)
    if "train" in names:
        from tasks.model.launch import check_launcher

        check_launcher(params.train)


def _embeds(label_space: LabelSpaceParams, names: Sequence[str]) -> bool:
    """Whether a stage of ``names`` loads the label-space embedder (for texts not in its cache)."""
    return ("embed" in names or ("verify" in names and label_space.verifies)
            or ("repair" in names and label_space.repair_rounds > 0))


def _asks_llm_server(params: EndToEndParams, names: Sequence[str], given: Mapping[str, Path],
                     store: ArtifactStore | None) -> bool:
    """Whether a stage of ``names`` may ask an OpenAI-compatible URL (not the embedded model,
    which the stage starts, nor OpenAI's own API): describe, or repair with rounds, whose
    artifact ``store`` lacks."""
    label_space = params.label_space
    describe = label_space.describe
    if describe.source != "llm" or describe.llm in (LOCAL_LLM, "openai"):
        return False
    asking = [name for name in ("describe", "repair") if name in names
              and (name == "describe" or label_space.repair_rounds > 0)]
    if not asking or store is None:
        return bool(asking)
    plans = plan_stages(params, [name for name in names if name in LABEL_SPACE_STAGES], given)
    return any(store.get(plans[name].stage, plans[name].key) is None for name in asking)


def check_llm_endpoint(describe: DescribeParams) -> None:
    """The URL backend lists its models within ``MODELS_TIMEOUT_S`` (one request, no retries)."""
    from tasks.label_space.llm.client import LLMEndpointError, served_models

    try:
        served_models(describe.llm, os.environ.get(describe.api_key_env) or None)
    except LLMEndpointError as error:
        raise LLMEndpointError(f"describe.llm (--llm) {describe.llm}: the LLM server does not answer: {error}") from None


def check_cluster_k(label_space: LabelSpaceParams) -> None:
    """K against the descriptions of a descriptors file (LLM-written ones are counted by the
    cluster stage, once they exist). Verify may drop some: the file's count is an upper bound."""
    describe = label_space.describe
    if describe.source != "import":
        return
    from tasks.label_space.cluster import check_k
    from tasks.label_space.describe import imported_descriptions

    count = sum(map(len, imported_descriptions(describe).values()))
    check_k(label_space.cluster.k, count, str(describe.descriptors))


def _described_classes(describe: DescribeParams) -> tuple[list[str], str]:
    """The classes a label space built with ``describe`` will have, in label order, and what
    they come from: the descriptors file's, or the named dataset's."""
    if describe.source == "import":
        from tasks.label_space.describe import imported_descriptions

        return list(imported_descriptions(describe)), str(describe.descriptors)
    from tasks.datasets import dataset_classes

    return dataset_classes(describe.dataset), f"the {describe.dataset} classes"


def check_model_inputs(params: EndToEndParams, names: Sequence[str], given: Mapping[str, Path]) -> None:
    """For train and evaluate: the config builds (overrides included) and evaluates the split
    asked for; the label space (given, or the one the run will build) has the dataset's classes
    in its label order; held-out classes are the dataset's and the label space's, and a run
    evaluated holding out classes was trained holding out the same ones."""
    from prolab_models.label_space import load_label_space
    from tasks.label_space.transfer import check_held_out
    from tasks.model.runs import build_config, check_classes, check_held_out_run, hold_out_classes, select_test_split

    train = params.train
    cfg = build_config(train.config, Path("<label-space>"), Path("<work-dir>"), train.data_root, train.cfg_options)
    if "evaluate" in names:
        select_test_split(cfg, train.config, params.evaluate.split)
    space = load_label_space(given[LABEL_SPACE]) if LABEL_SPACE in given else None
    if space is not None:
        classes, where = space.classes, str(space.path)
    else:  # the run builds it
        classes, where = _described_classes(params.label_space.describe)
    for stage_name, loader in LOADERS.items():
        if stage_name in names:
            check_classes(classes, cfg[loader]["dataset"], where)
    if train.held_out:
        hold_out_classes(cfg, train.held_out, train.config)
        check_held_out(train.held_out, classes, where)
    if "evaluate" in names and "train" in given:
        check_held_out_run(given["train"], train.held_out)

