"""The one LLM client: ask any OpenAI-compatible endpoint a question, in a chat or as a completion.

Any OpenAI-compatible endpoint serves (OpenAI, vLLM serving Llama-2-chat, a llama.cpp
server): the ``openai`` client is pointed at it by base URL and model name. Transport faults
(429 honouring Retry-After, 5xx, timeouts, refused connections) are retried by that client.
The API key is read from the environment at call time and is never written to a cache file,
a log line or an exception message.
"""

from __future__ import annotations

import ipaddress
import json
import os
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import openai
import pydantic

from tasks.errors import ProLabError
from tasks.label_space.llm.prompts import PromptStyle, Question
from tasks.label_space.llm.replies import MAX_REPLY_CHARS

LOCAL_DUMMY_KEY = "sk-no-key-required"
# How long ``served_models`` waits: a server that answers at all lists its models at once.
MODELS_TIMEOUT_S = 5.0


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


class MissingAPIKeyError(ProLabError, ValueError):
    """A hosted endpoint was named but the environment variable holding its key is empty."""


class LLMEndpointError(ProLabError, RuntimeError):
    """An OpenAI-compatible endpoint could not be asked which models it serves."""


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


def open_client(settings: LLMSettings) -> openai.OpenAI:
    """The OpenAI client for ``settings``' endpoint, retrying transport faults as they say;
    close it (``with``) when done."""
    return openai.OpenAI(base_url=settings.base_url, api_key=resolve_api_key(settings),
                         timeout=settings.timeout_s, max_retries=settings.max_retries)


@dataclass
class Reply:
    """One answer: its text (bounded; "" for a body that is not a completion) and its cost."""

    text: str
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


def ask(client: openai.OpenAI, settings: LLMSettings, question: Question) -> Reply:
    """Ask ``question`` of ``settings.model`` once: a chat completion for its messages, a plain
    completion for its prompt (a base model continues a text; in a chat it repeats the question)."""
    stop = question.stop if question.stop is not None else openai.NOT_GIVEN
    if question.messages is not None:
        response: Any = client.chat.completions.with_raw_response.create(
            model=settings.model, messages=question.messages,  # type: ignore[arg-type]
            temperature=settings.temperature, max_tokens=question.max_tokens, stop=stop)
    else:
        response = client.completions.with_raw_response.create(
            model=settings.model, prompt=question.prompt or "",
            temperature=settings.temperature, max_tokens=question.max_tokens, stop=stop)
    try:
        completion = response.parse()
    except ValueError:  # a 200 whose body is not JSON: as useless as an empty reply
        completion = None
    usage = getattr(completion, "usage", None)
    return Reply(_reply_text(completion)[:MAX_REPLY_CHARS], response.retries_taken,
                 getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0)


def failure_reason(error: Exception, key: str) -> str:
    """A one-line reason, with the key scrubbed in case an endpoint echoed it."""
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    return text.replace(key, "***") if key else text
