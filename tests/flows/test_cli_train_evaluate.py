"""``prolab train`` and ``prolab evaluate`` as a user runs them, on the generated demo data, and an
unchanged rerun of them and of ``prolab label-space``."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from uuid import UUID

import pytest
from PIL import Image

from data.demo import DEMO_CLASSES
from tasks.processes import free_port
from tasks.registry import LABEL_SPACE, LABEL_SPACE_STAGES
from tests.helpers.cli import last_line, prolab
from tests.helpers.fake_llm import FakeLLM
from tests.helpers.label_space_factory import make_label_space
from tests.helpers.prefect_runs import stage_states

TINY = ["--cfg-options", "train_cfg.max_iters=2", "train_dataloader.batch_size=2"]


def demo_label_space(env: dict[str, str], directory: Path, k: int) -> Path:
    descriptors = directory / f"demo-{k}.json"
    descriptors.write_text(json.dumps({c: [f"{c} shape", f"colour of a {c}", f"where a {c} is"]
                                       for c in DEMO_CLASSES}))
    return last_line(prolab(env, "label-space", "--dataset", "demo", "--descriptors", str(descriptors), "--k", str(k)))


@pytest.fixture(scope="module")
def label_space(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_label_space(env, tmp_path_factory.mktemp("descriptors"), k=6)


@pytest.fixture(scope="module")
def run(env: dict[str, str], label_space: Path) -> Path:
    return last_line(prolab(env, "train", "--config", "demo", "--label-space", str(label_space), *TINY))


@pytest.fixture(scope="module")
def evaluation(env: dict[str, str], label_space: Path, run: Path) -> Path:
    return last_line(prolab(env, *_evaluate_args(label_space, run)))


def _evaluate_args(label_space: Path, run: Path) -> list[str]:
    return ["evaluate", "--config", "demo", "--label-space", str(label_space), "--checkpoint", str(run),
            "--split", "test", *TINY]


def test_train_prints_a_run_with_its_checkpoint(env: dict[str, str], label_space: Path, run: Path) -> None:
    assert run.parent.name == "train" and list(run.glob("iter_2.pth"))
    assert json.loads((run / "manifest.json").read_text())["inputs"]["label_space"] == f"{LABEL_SPACE}/{label_space.name}"


def _files(*directories: Path) -> dict[Path, int]:
    """Every file under ``directories`` with its mtime: what a computation would change."""
    return {p: p.stat().st_mtime_ns for d in directories for p in d.rglob("*") if p.is_file()}


def _recorded(env: dict[str, str], rerun: subprocess.CompletedProcess[str], stages: int) -> dict[str, str]:
    """The task states of the Prefect run that an unchanged rerun left to its background recorder,
    once the recorder has finished."""
    pid = int(re.search(r"\(pid (\d+), log ([^)]+)\)", rerun.stderr).group(1))
    deadline = time.monotonic() + 180
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, "the recorder did not finish"
        time.sleep(0.2)
    log = Path(env["PROLAB_PREFECT_HOME"]) / "record.log"
    (line,) = [line for line in log.read_text().splitlines() if f" pid {pid} " in line]
    assert " Completed http" in line, line
    return stage_states(env, UUID(line.rsplit("/", 1)[-1]), stages)


def test_an_unchanged_rerun_computes_nothing_and_prefect_still_shows_it_cached(
        env: dict[str, str], label_space: Path, run: Path, evaluation: Path) -> None:
    store = Path(env["PROLAB_ARTIFACTS"])
    with FakeLLM() as llm:
        args = ["label-space", "--dataset", "demo", "--llm", llm.base_url, "--model", "fake-model", "--k", "5"]
        built = last_line(prolab(env, *args))
        caches = (store / ".cache" / "llm", store / ".cache" / "embeddings", built)
        asked, before = len(llm.requests), _files(*caches)
        again = prolab(env, *args)
        assert last_line(again) == built
        assert _recorded(env, again, len(LABEL_SPACE_STAGES)) == dict.fromkeys(LABEL_SPACE_STAGES, "Cached")
        assert len(llm.requests) == asked, "no LLM request, neither by the command nor by its recorder"
    assert _files(*caches) == before and "embedding" not in again.stderr, "no encoder call"

    before = _files(run, store / "train")
    again = prolab(env, "train", "--config", "demo", "--label-space", str(label_space), *TINY)
    assert last_line(again) == run and "Iter(train)" not in again.stderr
    assert _recorded(env, again, 1) == {"train": "Cached"}
    assert _files(run, store / "train") == before, "no training step, no work dir"

    before = _files(evaluation)
    again = prolab(env, *_evaluate_args(label_space, run))
    assert last_line(again) == evaluation and "Iter(test)" not in again.stderr
    assert _recorded(env, again, 1) == {"evaluate": "Cached"}
    assert _files(evaluation) == before


def test_evaluate_writes_metrics_and_pictures(evaluation: Path) -> None:
    out = evaluation
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["mIoU"] <= 100 and 0 <= metrics["aAcc"] <= 100
    assert set(metrics["per_class_iou"]) == set(DEMO_CLASSES)
    assert "property_precision_mean" in metrics and {"precision", "recall"} <= set(metrics["properties"][0])
    assert list(out.glob("*.png"))


@pytest.mark.parametrize("args, expected", [
    (["--config", "no-such-config"], "config 'no-such-config': not a known name"),
    (["--config", "demo", "--data-root", "/nonexistent/demo"], "/nonexistent/demo"),
])
def test_bad_train_input_is_named(env: dict[str, str], label_space: Path, args: list[str], expected: str) -> None:
    result = prolab(env, "train", "--label-space", str(label_space), *args, *TINY)
    assert result.returncode != 0 and expected in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_checkpoint_from_another_label_space_is_refused(env: dict[str, str], run: Path, tmp_path: Path) -> None:
    other = make_label_space(tmp_path / "other", DEMO_CLASSES, k=5)
    result = prolab(env, "evaluate", "--config", "demo", "--label-space", str(other), "--checkpoint", str(run), *TINY)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "label space" in result.stderr and str(run) in result.stderr, result.stderr[-2000:]


def test_refused_input_starts_no_prefect_server(env: dict[str, str], label_space: Path, tmp_path: Path) -> None:
    """Input is checked before the command connects to Prefect: with no PREFECT_API_URL, a bad
    config must not start (or leave running) the project's server."""
    broken = tmp_path / "broken.py"
    broken.write_text("model = dict(\n")
    home = tmp_path / "prefect-home"
    alone = {name: value for name, value in env.items() if name != "PREFECT_API_URL"}
    alone.update(PROLAB_PREFECT_HOME=str(home), PROLAB_PREFECT_PORT=str(free_port()))
    try:
        for command in ("train", "evaluate"):
            extra = ["--checkpoint", str(label_space)] if command == "evaluate" else []
            result = prolab(alone, command, "--config", str(broken), "--label-space", str(label_space), *extra)
            assert result.returncode != 0 and "Traceback" not in result.stderr
            assert f"config {broken}" in result.stderr
        assert not home.exists()
    finally:  # a regression would have started one: leave nothing running
        if home.exists():
            prolab(alone, "server", "stop")


def test_predict_names_a_corrupt_file_prints_the_output_dir_last_and_reruns_cached(
        env: dict[str, str], run: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for index in range(2):  # any size, any format OpenCV reads
        Image.new("RGB", (80 + 16 * index, 64), (40 * index, 90, 160)).save(images / f"photo{index}.jpg")
    (images / "broken.png").write_bytes(b"not a picture")
    args = ["predict", "--checkpoint", str(run), str(images), "--out", str(tmp_path / "out")]
    first = prolab(env, *args)
    out = last_line(first)
    assert out == (tmp_path / "out").resolve() and "skipped broken.png" in first.stderr, first.stderr[-2000:]
    assert sorted(p.name for p in (out / "pred").iterdir()) == ["photo0.png", "photo1.png"]
    assert [r["width"] for r in json.loads((out / "predictions.json").read_text())["images"]] == [80, 96]
    again = prolab(env, *args)
    assert last_line(again) == out and "Cached" in again.stderr, again.stderr[-2000:]


@pytest.mark.parametrize("args, expected", [
    (["--query", "   "], "query 1 is only whitespace"),
    (["--add"], "--add: give --classes"),
])
def test_bad_predict_input_is_named(env: dict[str, str], run: Path, tmp_path: Path, args: list[str],
                                    expected: str) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "photo.png")
    result = prolab(env, "predict", "--checkpoint", str(run), str(tmp_path / "photo.png"), *args)
    assert result.returncode != 0 and expected in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
