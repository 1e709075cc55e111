"""The embedded LLM default, for real: llama-cpp-python serving the packaged Gemma-3-270M."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tasks.label_space.describe import describe_classes, llm_model
from tasks.label_space.llm.client import LOCAL_DUMMY_KEY, LLMSettings, served_models
from tasks.label_space.llm.engines import ENGINES, LOCAL_ENGINE
from tasks.label_space.llm.prompts import ASPECT_MAX_TOKENS, ASPECT_STOP, ASPECTS, EXAMPLES, repair_prompt
from tasks.label_space.llm.replies import MAX_PROPERTY_CHARS, parse_repair_reply
from tasks.label_space.llm_server import LLMServerError, local_llm_server, serve, server_command
from tasks.params import DescribeParams
from tasks.processes import free_port
from tests.helpers.cli import PROJECT_ROOT

log = logging.getLogger(__name__)

needs_llama_cpp = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python[server] is not installed (the project setup installs it)",
)
_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="session")
def gemma() -> Iterator[LLMSettings]:
    """One Gemma server for the whole session."""
    with local_llm_server() as settings:
        yield settings


@needs_llama_cpp
def test_gemma_describes_classes_and_the_second_run_is_cached(gemma: LLMSettings, tmp_path: Path) -> None:
    classes = ["car", "tree", "road"]
    started = time.monotonic()
    report = describe_classes(classes, gemma, tmp_path)
    per_class = (time.monotonic() - started) / len(classes)
    log.info("Gemma-3-270M: %.1f s per class, %d completion tokens", per_class, report.completion_tokens)
    assert list(report.descriptions) == classes
    for name in classes:
        properties = report.descriptions[name]
        assert properties and all(0 < len(p) <= MAX_PROPERTY_CHARS for p in properties), (name, report.raw_replies)
        assert report.raw_replies[name].strip()
        assert "<<SYS>>" not in report.raw_replies[name], "the prompt must reach Gemma in Gemma's chat format"
    assert report.calls_made >= 3 and report.completion_tokens > 0 and report.prompt_tokens > 0

    again = describe_classes(classes, gemma, tmp_path)
    assert (again.calls_made, again.cached) == (0, 3)
    assert again.descriptions == report.descriptions


@needs_llama_cpp
def test_gemma_answers_the_aspects_prompt_once_per_aspect_and_each_answer_is_cached(
    gemma: LLMSettings, tmp_path: Path
) -> None:
    classes = ["car", "sky"]
    settings = gemma.model_copy(update={"prompt": "aspects"})
    report = describe_classes(classes, settings, tmp_path)
    assert report.calls_made == len(classes) * len(ASPECTS)
    example_lines = {line.casefold() for lines in EXAMPLES.values() for line in lines}
    for name in classes:
        properties = report.descriptions[name]
        assert properties and all(0 < len(p) <= MAX_PROPERTY_CHARS for p in properties), report.raw_replies[name]
        assert not {p.casefold() for p in properties} & example_lines
        assert not any(re.search(rf"\b{name}\b", p, re.IGNORECASE) for p in properties), properties
        assert all(f"[{aspect}]" in report.raw_replies[name] for aspect in ASPECTS)

    again = describe_classes(classes, settings, tmp_path)
    assert (again.calls_made, again.cached) == (0, 2) and again.descriptions == report.descriptions
    few_shot = describe_classes(["car"], gemma, tmp_path)
    assert few_shot.calls_made >= 1, "the few-shot prompt's answers are cached apart from the aspects'"


@needs_llama_cpp
def test_gemma_completes_the_repair_prompt_with_lines_about_the_target_only(gemma: LLMSettings) -> None:
    client = openai.OpenAI(base_url=gemma.base_url, api_key=LOCAL_DUMMY_KEY)
    reply = client.completions.create(model=gemma.model, prompt=repair_prompt("sky", "sidewalk"), temperature=0,
                                      max_tokens=ASPECT_MAX_TOKENS, stop=ASPECT_STOP).choices[0].text
    lines = parse_repair_reply(reply, "sky", "sidewalk", completion=True)
    assert lines, reply
    assert not any(re.search(r"\b(?:sky|sidewalk)s?\b", line, re.IGNORECASE) for line in lines), lines


@needs_llama_cpp
def test_the_server_answers_on_loopback_under_the_models_name_and_stops_after_the_block() -> None:
    with local_llm_server() as settings:
        assert settings.base_url.startswith("http://127.0.0.1:") and settings.api_key_env is None
        with _no_proxy.open(f"{settings.base_url}/models", timeout=5) as reply:
            served = [model["id"] for model in json.load(reply)["data"]]
        assert served == [settings.model] == ["gemma-3-270m-q4_k_m"]
    with pytest.raises(urllib.error.URLError):
        _no_proxy.open(f"{settings.base_url}/models", timeout=5)


@needs_llama_cpp
def test_a_url_without_a_model_asks_for_the_model_the_server_serves(gemma: LLMSettings) -> None:
    """``--llm URL`` without ``--model`` against a real llama.cpp server: the name asked is the one
    it serves (the GGUF's alias), not OpenAI's default, which it would not answer to."""
    assert served_models(gemma.base_url, None) == [gemma.model]
    assert llm_model(DescribeParams(llm=gemma.base_url)) == gemma.model == "gemma-3-270m-q4_k_m"


@needs_llama_cpp
def test_a_model_that_cannot_load_fails_with_the_servers_output(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    with pytest.raises(LLMServerError, match="exited with status") as caught:
        with local_llm_server(broken):
            pass
    assert "broken.gguf" in str(caught.value)


@needs_llama_cpp
def test_serve_runs_in_the_foreground_until_interrupted(tmp_path: Path) -> None:
    port = free_port()
    # Python turns SIGINT into KeyboardInterrupt only if SIGINT was not ignored when it started,
    # and a shell ignores it for background jobs (`.ci/run &`): restore what Ctrl-C in a terminal gives.
    code = (
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "import logging; logging.basicConfig(level=logging.INFO); from tasks.label_space.llm_server import serve; "
        f"raise SystemExit(serve(port={port}))"
    )
    output = tmp_path / "serve.log"
    with open(output, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", code], cwd=PROJECT_ROOT, stdout=sink, stderr=sink, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with _no_proxy.open(f"http://127.0.0.1:{port}/v1/models", timeout=2) as reply:
                    assert json.load(reply)["data"][0]["id"] == "gemma-3-270m-q4_k_m"
                    break
            except urllib.error.URLError:
                assert process.poll() is None and time.monotonic() < deadline, "serve() did not come up"
                time.sleep(0.25)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    finally:  # the server is in serve()'s process group: leave nothing behind if the test failed
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert f"on http://127.0.0.1:{port}/v1" in output.read_text()
    with pytest.raises(urllib.error.URLError):
        _no_proxy.open(f"http://127.0.0.1:{port}/v1/models", timeout=5)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_without_vllm_installed_says_how_to_get_it() -> None:
    with pytest.raises(LLMServerError, match=r"pip install 'prolab\[vllm\]'"):
        server_command("vllm", "meta-llama/Llama-2-7b-chat-hf", "127.0.0.1", 8000)
    with pytest.raises(LLMServerError, match="vLLM is not installed"):
        serve("vllm", "meta-llama/Llama-2-7b-chat-hf")


def test_vllm_needs_a_model_name() -> None:
    with pytest.raises(ValueError, match="needs a model name"):
        serve("vllm", None)


def test_llm_serve_offers_the_engines_of_the_engines_table() -> None:
    from flows.cli import build_parser

    def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices

    serve_parser = subcommands(subcommands(build_parser())["llm"])["serve"]
    engine = next(a for a in serve_parser._actions if a.dest == "engine")
    assert list(engine.choices) == list(ENGINES) and engine.default == LOCAL_ENGINE
