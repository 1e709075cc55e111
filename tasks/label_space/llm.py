"""The describe stage's LLM side: ask a chat model for each class's visual properties.

ProLab (method.md §1) describes every class with one few-shot chat completion at
temperature 0 and keeps the reply's bullet lines: the ``few-shot`` prompt, used with every
OpenAI-compatible backend. The embedded Gemma-3-270M is a base (not instruction-tuned)
model: in a chat it repeats the question, and given worked examples it copies their lines
into other classes. It is asked with the ``aspects`` prompt instead: one plain text
completion per aspect (colours, material, parts, what a photo of it shows), each the start
of a list with nothing to copy ("Parts of a car:\n-"), the answers merged.

Any OpenAI-compatible endpoint serves
(OpenAI, vLLM serving Llama-2-chat, a llama.cpp server): the ``openai`` client is pointed at
it by base URL and model name. Transport faults (429 honouring Retry-After, 5xx, timeouts,
refused connections) are retried by that client; a reply that yields no property is asked
again a bounded number of times. Each answer is cached on disk per (model, prompt version,
class, aspect, generation settings), so editing one class asks the LLM about that class only
and a failed run keeps every answer it already obtained.

Replies are data: they are parsed as text, never evaluated, and never become a path (cache
files are named by a hash). The API key is read from the environment at call time and is
never written to a cache file, a log line or an exception message.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import openai
import pydantic

from tasks.errors import ProLabError
from tasks.files import atomic_write, sha256_json

log = logging.getLogger(__name__)

# Bump when a prompt or its parser changes what a class's answer is: it is part of every
# cache key, so old answers are then asked again rather than silently reused.
PROMPT_VERSION = "prolab-describe-v1"  # the few-shot prompt (method.md)
ASPECTS_PROMPT_VERSION = "prolab-describe-aspects-v1"

PromptStyle = Literal["few-shot", "aspects"]

SYSTEM_MESSAGE = "You are a helpful assistant."

INSTRUCTION = (
    'Describe what a category looks like, as in the examples: 8 to 15 short lines, each '
    'starting with "- ", one visual property per line (shape, material, texture, colour, '
    "typical context, parts, size)."
)

# Four worked examples (a thing, a stuff class, a vehicle, a part of a building), written for
# this project; the original used wall, building, sky and floor.
EXAMPLES: dict[str, tuple[str, ...]] = {
    "bench": (
        "long seat for several people",
        "flat horizontal surface at knee height",
        "made of wooden slats, metal or stone",
        "backrest and armrests on many designs",
        "stands on four legs or two solid supports",
        "brown, grey, green or black",
        "weathered or painted finish outdoors",
        "found in parks, along paths, at bus stops and in halls",
        "about as long as two or three people sitting side by side",
        "often bolted to the ground",
    ),
    "grass": (
        "low green ground cover",
        "made of many thin, narrow blades",
        "soft, fine texture that looks uniform from afar",
        "bright to dark green, yellow or brown when dry",
        "covers lawns, fields, parks and road verges",
        "flat or gently rolling areas with irregular edges",
        "mowed short in stripes or grown long and uneven",
        "often dotted with weeds, flowers or bare patches",
        "borders paths, trees and flower beds",
        "ankle to knee height",
    ),
    "bicycle": (
        "two-wheeled vehicle moved by pedalling",
        "two large spoked wheels with rubber tyres",
        "thin tubular frame shaped like a diamond",
        "handlebar at the front, saddle on top",
        "chain, pedals and crank between the wheels",
        "made of steel, aluminium or carbon fibre",
        "painted frame in any colour, black tyres",
        "about as tall as a person's waist",
        "ridden on roads, cycle lanes and paths",
        "often parked at racks or leaned against walls",
        "may carry a basket, lights, mudguards or a bell",
    ),
    "window": (
        "opening in a wall filled with glass",
        "rectangular, sometimes arched or round",
        "transparent or reflective glass panes",
        "framed in wood, aluminium or plastic",
        "divided by bars into smaller panes on some designs",
        "white, brown, grey or black frame",
        "set into the facades of buildings and the bodies of vehicles",
        "may have a sill, shutters, blinds or curtains",
        "often arranged in regular rows on a facade",
        "shows the sky or the room behind it",
    ),
}

# Small models (Gemma-3-270M) go on to invent the next "category:" block; stop there.
STOP = ["category:"]

# Parser bounds: a reply is read up to MAX_REPLY_CHARS; a property is cut to
# MAX_PROPERTY_CHARS; a class keeps at most MAX_PROPERTIES (a runaway list would flood the
# clustering with one class's bullets).
MAX_REPLY_CHARS = 16_384
MAX_PROPERTY_CHARS = 200
MAX_PROPERTIES = 32
# A reply without list markers is read line by line only when it has this many lines;
# a lone paragraph is prose (a refusal, a chat answer), not properties.
MIN_UNMARKED_LINES = 3
# An n-gram (n up to MAX_LOOP_NGRAM words) said MIN_LOOP_REPEATS times in a row is a
# generation loop: the property is cut after its first occurrence.
MAX_LOOP_NGRAM = 8
MIN_LOOP_REPEATS = 3

LOCAL_DUMMY_KEY = "sk-no-key-required"
# How long ``served_models`` waits: a server that answers at all lists its models at once.
MODELS_TIMEOUT_S = 5.0

# The aspects prompt: the start of one list per aspect, completed as plain text (a base model
# continues a list header; asked a question, it repeats it). Chosen on the demo's classes
# (benchmarks/RESULTS.md, "label-space quality"): shape, size and places were asked too, and
# Gemma-3-270M answered them with noise shared by every class ("100 meters", "The shape of it
# is the most important thing", "<strong>The Netherlands</strong>"); a photo's contents give
# the context instead (a road: "a car", "a truck", "a bus").
ASPECTS: dict[str, str] = {
    "colour": "Typical colours of a {category}:\n-",
    "material": "What a {category} is made of:\n-",
    "parts": "Parts of a {category}:\n-",
    "seen": "Things you see in a photo of a {category}:\n-",
}
# A short list each: a blank line or an image token (what Gemma's base model emits when it
# drifts) ends it; its first few items are kept.
ASPECT_STOP = ["\n\n", "<start_of_image>"]
ASPECT_MAX_TOKENS = 48
MAX_ASPECT_PROPERTIES = 4
_HTML_TAG = re.compile(r"</?[a-zA-Z][^>]*>")

# ASCII markers need a following space ("-10 degrees", "*Note*" are not items).
_ITEM = re.compile(r"^(?:[•‣◦▪·]\s*|[-*+–—]\s+|\(?\d{1,3}[.)]\s+)(?P<text>.*)$")
_CATEGORY_LINE = re.compile(r"^\W*category\s*:", re.IGNORECASE)
_EMPHASIS = re.compile(r"\*\*|`")
_WORD = re.compile(r"\w+")


class LLMSettings(pydantic.BaseModel):
    """Which endpoint and model describe the classes, how to ask them, and how hard to try.

    ``prompt`` is ``few-shot`` (method.md; chat models) or ``aspects`` (base models such as
    the embedded Gemma; plain completions). ``api_key_env`` names the environment variable
    holding the key (the key itself never enters settings, manifests or logs); ``None``
    sends a dummy key, for local servers.
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    base_url: str
    model: str = pydantic.Field(min_length=1)
    api_key_env: str | None = "OPENAI_API_KEY"
    temperature: float = pydantic.Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = pydantic.Field(256, ge=16)
    timeout_s: float = pydantic.Field(60, gt=0)
    max_retries: int = pydantic.Field(6, ge=0)
    concurrency: int = pydantic.Field(4, ge=1)
    empty_reply_retries: int = pydantic.Field(2, ge=0)
    prompt: PromptStyle = "few-shot"

    @pydantic.field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL such as http://127.0.0.1:8000/v1, got {value!r}")
        return value


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


class MissingAPIKeyError(ProLabError, ValueError):
    """A hosted endpoint was named but the environment variable holding its key is empty."""


class LLMEndpointError(ProLabError, RuntimeError):
    """An OpenAI-compatible endpoint could not be asked which models it serves."""


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


# --------------------------------------------------------------------------------- prompt


def build_messages(category: str, nudge: bool = False) -> list[dict[str, str]]:
    """The chat messages asking for ``category``'s properties; ``nudge`` restates the format."""
    blocks = [INSTRUCTION]
    blocks += ["category: " + name + "\n" + "\n".join("- " + p for p in props) for name, props in EXAMPLES.items()]
    target = "category: " + category
    if nudge:
        target += f'\n(Reply only with the list for {category}: 8 to 15 lines, each starting with "- ".)'
    blocks.append(target)
    return [
        {"role": "system", "content": SYSTEM_MESSAGE},
        {"role": "user", "content": "\n\n".join(blocks)},
    ]


def prompt_version(style: PromptStyle) -> str:
    """The version of a prompt style, part of every answer's cache key and of the describe key."""
    return PROMPT_VERSION if style == "few-shot" else ASPECTS_PROMPT_VERSION


def aspect_prompt(category: str, aspect: str) -> str:
    """The text whose completion lists ``category``'s ``aspect`` (a key of ``ASPECTS``)."""
    return ASPECTS[aspect].format(category=category)


# --------------------------------------------------------------------------------- parser


def _cut_loop(text: str) -> str:
    """``text`` up to the end of the first n-gram that then repeats itself in a row."""
    words = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(text)]
    tokens = [w[2] for w in words]
    for i in range(len(tokens)):
        for n in range(1, MAX_LOOP_NGRAM + 1):
            if i + n * MIN_LOOP_REPEATS > len(tokens):
                break
            gram = tokens[i : i + n]
            if all(tokens[i + k * n : i + (k + 1) * n] == gram for k in range(1, MIN_LOOP_REPEATS)):
                return text[: words[i + n - 1][1]]
    return text


def _clean(text: str) -> str:
    """One property as plain text: no emphasis, no loop, bounded, no trailing punctuation."""
    text = _EMPHASIS.sub("", text)
    text = " ".join(text.split())
    text = _cut_loop(text)
    if len(text) > MAX_PROPERTY_CHARS:
        cut = text[:MAX_PROPERTY_CHARS]
        text = cut.rsplit(" ", 1)[0] if " " in cut else cut
    return text.strip(" \"'").rstrip(" .,;:").strip()


def parse_properties(reply: str) -> list[str]:
    """The visual properties in an LLM reply, in order, without duplicates.

    List items (``-``, ``*``, ``•``, ``–``, ``1.``, ``2)``...) are kept and prose lines
    dropped; a reply without any list item is read line by line when it has at least
    ``MIN_UNMARKED_LINES`` lines (a list whose markers the model forgot), else it yields
    nothing. A ``category:`` line after the first item ends the list (a model that ignored
    the stop sequence). Duplicates compare case-insensitively; the first spelling is kept.
    """
    lines = [line.strip() for line in reply[:MAX_REPLY_CHARS].splitlines()]
    items: list[str] = []
    unmarked: list[str] = []
    for line in lines:
        if not _WORD.search(line):
            continue
        if _CATEGORY_LINE.match(line):
            if items or unmarked:
                break
            continue
        match = _ITEM.match(line)
        if match:
            items.append(match.group("text"))
        elif not line.endswith(":"):
            unmarked.append(line)
    if not items:
        items = unmarked if len(unmarked) >= MIN_UNMARKED_LINES else []
    properties: list[str] = []
    seen: set[str] = set()
    for item in items:
        text = _clean(item)
        if not _WORD.search(text) or text.casefold() in seen:
            continue
        seen.add(text.casefold())
        properties.append(text)
        if len(properties) == MAX_PROPERTIES:
            break
    return properties


_SENTENCE_END = re.compile(r"(?<=\w)[.!?](?:\s|$)")


def parse_aspect_reply(reply: str, category: str, limit: int = MAX_ASPECT_PROPERTIES) -> list[str]:
    """The properties in the completion of an aspect prompt (which ends with the first "-").

    List items as ``parse_properties`` reads them (HTML tags dropped), each cut at its first
    sentence end (a base model rambles on), with the class's name replaced by "it": "the sky
    is blue" is a property ("it is blue"), the class name is not, and would pull every line
    of the class towards its name. At most ``limit``, and none that is only "it".
    """
    forms = [category, category + "s", category + "es"]
    forms += [category[:-1] + "ies"] if category.endswith("y") else []
    name = "(?:" + "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True)) + ")"
    article_and_name = re.compile(rf"\b(?:the|a|an)\s+{name}\b", re.IGNORECASE)
    bare_name = re.compile(rf"\b{name}\b", re.IGNORECASE)
    properties: list[str] = []
    for item in parse_properties("-" + _HTML_TAG.sub("", reply)):
        text = _SENTENCE_END.split(item, maxsplit=1)[0]
        text = bare_name.sub("it", article_and_name.sub("it", text))
        text = _clean(text)
        if text.casefold() in ("", "it") or text.casefold() in {p.casefold() for p in properties}:
            continue
        properties.append(text)
        if len(properties) == limit:
            break
    return properties


# --------------------------------------------------------------------------------- cache


def cache_identity(category: str, settings: LLMSettings, aspect: str | None = None) -> dict[str, Any]:
    """What determines an answer: not the base URL (one model served anywhere answers alike).

    A few-shot answer is one per class; an aspects answer one per (class, aspect).
    """
    identity: dict[str, Any] = {
        "prompt_version": prompt_version(settings.prompt),
        "model": settings.model,
        "class": category,
        "temperature": settings.temperature,
        "max_tokens": settings.max_tokens,
    }
    if aspect is not None:
        identity.update(aspect=aspect, max_tokens=min(settings.max_tokens, ASPECT_MAX_TOKENS))
    return identity


def _cache_path(cache_dir: Path, identity: dict[str, Any]) -> Path:
    return cache_dir / f"{sha256_json(identity)[:32]}.json"


def _read_cache(path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """A cached answer, or None when absent, unreadable or not for ``identity``."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        log.warning("ignoring unreadable LLM cache entry %s: %s", path, error)
        return None
    properties = entry.get("properties") if isinstance(entry, dict) else None
    if (
        not isinstance(entry, dict)
        or entry.get("identity") != identity
        or not isinstance(entry.get("raw_reply"), str)
        or not isinstance(properties, list)
        or not (properties or "aspect" in identity)  # an aspect may rightly have nothing to say
        or not all(isinstance(p, str) for p in properties)
    ):
        log.warning("ignoring LLM cache entry %s: it does not hold an answer for %r", path, identity["class"])
        return None
    return entry


def _write_cache(path: Path, entry: dict[str, Any]) -> None:
    """A reader sees the old entry or the new one, never a part."""
    atomic_write(path, json.dumps(entry, ensure_ascii=False, indent=1))


# --------------------------------------------------------------------------------- client


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_api_key(settings: LLMSettings) -> str:
    """The key from the environment; a dummy for local servers that need none."""
    if settings.api_key_env is None:
        return LOCAL_DUMMY_KEY
    key = os.environ.get(settings.api_key_env, "")
    if key:
        return key
    if _is_loopback(settings.base_url):
        return LOCAL_DUMMY_KEY
    raise MissingAPIKeyError(
        f"environment variable {settings.api_key_env} is not set: the endpoint "
        f"{settings.base_url} needs an API key (set it, or point api_key_env at another variable)"
    )


def served_models(base_url: str, api_key: str | None, timeout: float = MODELS_TIMEOUT_S) -> list[str]:
    """The ids of the models ``base_url`` serves (``GET {base_url}/models``), in its order.

    Asked once, without retries, so that a server which is down is said at once: a URL backend
    named without a model is asked its model this way before any work (vLLM and llama.cpp's
    server serve one). ``api_key`` None sends the dummy key local servers accept. Raises
    ``LLMEndpointError`` naming the URL when the endpoint does not answer with a model list.
    """
    url = f"{base_url.rstrip('/')}/models"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key or LOCAL_DUMMY_KEY}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            listing = json.load(reply)
    except OSError as error:  # refused, timed out, an HTTP error status
        raise LLMEndpointError(f"{url} did not list its models: {error}") from None
    except ValueError:
        raise LLMEndpointError(f"{url} did not list its models: its answer is not JSON") from None
    models = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(models, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in models):
        raise LLMEndpointError(f'{url} did not list its models: expected {{"data": [{{"id": NAME}}, ...]}}, '
                               f"got {str(listing)[:80]!r}")
    return [model["id"] for model in models]


@dataclass
class _Answer:
    properties: list[str]
    raw_reply: str
    calls: int = 0
    retried: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _reply_text(completion: Any) -> str:
    """The first choice's text, or "" for a reply that is not a completion (garbage body)."""
    try:
        choice = completion.choices[0]
        content = choice.message.content if hasattr(choice, "message") else choice.text
    except (AttributeError, IndexError, TypeError):
        return ""
    return content if isinstance(content, str) else ""


def _ask(client: openai.OpenAI, category: str, settings: LLMSettings, aspect: str | None = None) -> _Answer:
    """Ask one question: the few-shot chat until a reply yields properties, at most
    1 + empty_reply_retries times; or one aspect's completion, once (at temperature 0 the
    same prompt gets the same answer, and an aspect may have nothing to say)."""
    answer = _Answer(properties=[], raw_reply="")
    attempts = 1 if aspect is not None else 1 + settings.empty_reply_retries
    for attempt in range(attempts):
        if aspect is None:
            response = client.chat.completions.with_raw_response.create(
                model=settings.model,
                messages=build_messages(category, nudge=attempt > 0),  # type: ignore[arg-type]
                temperature=settings.temperature,
                max_tokens=settings.max_tokens,
                stop=STOP,
            )
        else:
            response = client.completions.with_raw_response.create(
                model=settings.model,
                prompt=aspect_prompt(category, aspect),
                temperature=settings.temperature,
                max_tokens=min(settings.max_tokens, ASPECT_MAX_TOKENS),
                stop=ASPECT_STOP,
            )
        answer.calls += 1
        answer.retried += response.retries_taken + (attempt > 0)
        try:
            completion = response.parse()
        except ValueError:  # a 200 whose body is not JSON: as useless as an empty reply
            completion = None
        usage = getattr(completion, "usage", None)
        answer.prompt_tokens += getattr(usage, "prompt_tokens", 0) or 0
        answer.completion_tokens += getattr(usage, "completion_tokens", 0) or 0
        answer.raw_reply = _reply_text(completion)[:MAX_REPLY_CHARS]
        if aspect is not None:
            answer.properties = parse_aspect_reply(answer.raw_reply, category)
            break
        answer.properties = parse_properties(answer.raw_reply)
        if answer.properties:
            break
        log.warning("reply for %r yielded no property (attempt %d): %.80r", category, attempt + 1, answer.raw_reply)
    return answer


def _failure_reason(error: Exception, key: str) -> str:
    """A one-line reason, with the key scrubbed in case an endpoint echoed it."""
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    return text.replace(key, "***") if key else text


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
    answers: dict[str, dict[str | None, _Answer]] = {name: {} for name in classes}
    report = DescribeReport(descriptions={}, raw_replies={})
    described: set[str] = set()

    def progress(name: str, note: str) -> None:
        log.info("described %d/%d %s (%s)", len(described), len(classes), name, note)

    pending: list[tuple[str, str | None]] = []
    for name in classes:
        cached = True
        for aspect in _questions(settings):
            identity = cache_identity(name, settings, aspect)
            entry = _read_cache(_cache_path(cache_dir, identity), identity)
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
        key = resolve_api_key(settings)
        client = openai.OpenAI(
            base_url=settings.base_url,
            api_key=key,
            timeout=settings.timeout_s,
            max_retries=settings.max_retries,
        )
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
                    reasons[name] = _failure_reason(error, key)
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
                identity = cache_identity(name, settings, aspect)
                _write_cache(
                    _cache_path(cache_dir, identity),
                    {"identity": identity, "raw_reply": answer.raw_reply, "properties": answer.properties},
                )
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
