"""describe: ADE20K's 150 classes against an endpoint with a fixed latency per request.

Baseline: the original loop, one class at a time with a 0.5 s pause after each call.
Ours: ``describe_classes`` with 16 calls in flight. Both start from an empty cache and talk to
the same fake OpenAI-compatible server (0.2 s added to every answer), so the figure is the
pipeline's overhead and concurrency, not a model's speed.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
from pathlib import Path

LATENCY_S = 0.2
PAUSE_S = 0.5
CONCURRENCY = 16


def _fake_llm_class() -> type:
    """The tests' fake endpoint, loaded by path (``import tests`` would find a third-party package)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "helpers" / "fake_llm.py"
    spec = importlib.util.spec_from_file_location("prolab_fake_llm", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module.FakeLLM


def main() -> None:
    from tasks.datasets import dataset_classes
    from tasks.label_space.describe import describe_classes
    from tasks.label_space.llm.client import LLMSettings
    FakeLLM = _fake_llm_class()

    classes = dataset_classes("ade20k")
    with FakeLLM(latency_s=LATENCY_S) as llm, tempfile.TemporaryDirectory() as tmp:
        settings = LLMSettings(base_url=llm.base_url, model="fake-model", api_key_env=None, concurrency=1)
        started = time.perf_counter()
        for name in classes:  # the original loop
            describe_classes([name], settings, Path(tmp) / "serial")
            time.sleep(PAUSE_S)
        serial = time.perf_counter() - started

        started = time.perf_counter()
        report = describe_classes(classes, settings.model_copy(update={"concurrency": CONCURRENCY}),
                                  Path(tmp) / "concurrent")
        concurrent = time.perf_counter() - started
    assert len(report.descriptions) == len(classes) and report.calls_made == len(classes)
    print(f"classes={len(classes)} latency_s={LATENCY_S} pause_s={PAUSE_S} concurrency={CONCURRENCY}")
    print(f"describe_serial_seconds={serial:.2f}")
    print(f"describe_concurrent_seconds={concurrent:.2f}")
    print(f"describe_speedup={serial / concurrent:.1f}")


if __name__ == "__main__":
    main()
