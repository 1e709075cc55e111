"""The ``prolab`` command line, run as a user runs it: a real process and a real Prefect server.

Input only the flow run can judge (k against the descriptions verify kept) is refused by a
``prolab`` process, whose stderr must hold no traceback from Prefect's task and flow logs. Of
the input refused before any flow run (among it k against a descriptors file and an embedder
that is not there), one bad descriptor file and one bad option are refused by a process, the
others by the command's ``main`` in this process (``prolab_in_process``: the same parser, checks and
messages, without a process start, ~2 s each; it fails a command that gets as far as a flow
run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tasks.registry import LABEL_SPACE, LABEL_SPACE_STAGES
from tests.helpers.cli import CITYSCAPES, prolab, prolab_in_process, shared_path


@pytest.fixture
def cli_env(prefect_server: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**prefect_server, "PROLAB_ARTIFACTS": str(tmp_path / "artifacts"), "HF_HUB_OFFLINE": "1"}


def test_label_space_prints_its_directory_last_and_reruns_as_a_lookup(cli_env: dict[str, str]) -> None:
    descriptors = str(shared_path(CITYSCAPES))
    args = ["label-space", "--descriptors", descriptors, "--embedder", "all-MiniLM-L6-v2", "--k", "32", "--seed", "0"]
    first = prolab(cli_env, *args)
    assert first.returncode == 0, first.stderr
    directory = Path(first.stdout.strip().splitlines()[-1])
    assert (directory / "properties.parquet").is_file() and directory.parent.name == LABEL_SPACE
    assert "embedding 185 new texts" in first.stderr

    status = prolab(cli_env, "status", *args[1:])
    assert status.returncode == 0 and status.stdout.count("up to date") == len(LABEL_SPACE_STAGES), status.stdout
    assert "(repair off)" in status.stdout, "a descriptors file is neither verified nor repaired unless asked"

    again = prolab(cli_env, *args)
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == str(directory)
    assert "new texts" not in again.stderr and "every stage is up to date" in again.stderr

    changed = prolab(cli_env, "status", *args[1:-4], "--k", "30", "--seed", "0")
    assert "parameter label_space.cluster.k: 32 -> 30" in changed.stdout
    assert changed.stdout.count("up to date") == LABEL_SPACE_STAGES.index("cluster"), changed.stdout


def _write(path: Path, content: str | bytes) -> str:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


BAD_DESCRIPTORS = {
    "malformed JSON": ('{"car": ["red",', "malformed JSON at line 1"),
    "top level not an object": ('[["car", "red"]]', "top level must be an object"),
    "class with no descriptions": ('{"car": [], "road": ["grey"]}', 'class "car": has no descriptions'),
    "description not a string": ('{"car": ["red", 4]}', 'class "car": description 2 is a number, expected text'),
    "descriptions not a list": ('{"car": "red"}', 'class "car": expected a list'),
    "empty description": ('{"car": ["red", "  "]}', 'class "car": description 2 is empty'),
    "not UTF-8": (b'{"car": ["\xff\xfe red"]}', "not UTF-8"),
    "no classes": ("{}", "no classes"),
}


@pytest.mark.parametrize("case", sorted(BAD_DESCRIPTORS))
def test_bad_descriptor_file_is_named_without_traceback(cli_env: dict[str, str], tmp_path: Path, case: str) -> None:
    content, expected = BAD_DESCRIPTORS[case]
    path = _write(tmp_path / "bad.json", content)
    run = prolab if case == "malformed JSON" else prolab_in_process
    result = run(cli_env, "label-space", "--descriptors", path)
    assert result.returncode != 0
    assert expected in result.stderr and path in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, expected", [
    (["--descriptors", "/nonexistent/descriptors.json"], "/nonexistent/descriptors.json: no such file"),
    (["--k", "0"], "--k: Input should be greater than or equal to 1"),
    (["--k", "-3"], "--k: Input should be greater than or equal to 1"),
    (["--k", "187"], "k=187: must be between 1 and the number of descriptions (186 in "),
    (["--embedder", "no-such-org/no-such-model"], "embedder 'no-such-org/no-such-model' could not be loaded"),
    (["--embedder", "/tmp"], "/tmp: not a sentence-transformers or Hugging Face model directory"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--dataset", "ade20k"], "no descriptions for 'floor', 'tree'"),
    (["--llm", "ftp://example"], "llm must be 'local', 'openai' or an http(s) base URL"),
])
def test_bad_options_are_named_and_lose_nothing(cli_env: dict[str, str], args: list[str], expected: str) -> None:
    descriptors = str(shared_path(CITYSCAPES))
    run = prolab if args == ["--k", "0"] else prolab_in_process
    if "--descriptors" not in args:
        args = ["--descriptors", descriptors, *args]
    result = run(cli_env, "label-space", *args)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_failed_cluster_keeps_what_was_computed(cli_env: dict[str, str]) -> None:
    """K = the file's 186 descriptions passes the check before the flow run, but verify drops 6 of
    them: the cluster stage refuses K, and what the stages before it computed is kept."""
    descriptors = str(shared_path(CITYSCAPES))
    failed = prolab(cli_env, "label-space", "--descriptors", descriptors, "--verify", "--k", "186")
    assert failed.returncode == 1 and "k=186: must be between 1 and the number of descriptions (180)" in failed.stderr
    assert "Traceback" not in failed.stderr
    store = Path(cli_env["PROLAB_ARTIFACTS"])
    kept = sorted(p.parent.parent.name for p in store.glob("*/*/manifest.json"))
    assert kept == ["describe", "embed", "verify"]  # computed before the bad K was met, and kept
    fixed = prolab(cli_env, "label-space", "--descriptors", descriptors, "--verify", "--k", "8")
    assert fixed.returncode == 0 and "new texts" not in fixed.stderr


def test_verify_lists_damaged_artifacts(cli_env: dict[str, str]) -> None:
    descriptors = str(shared_path(CITYSCAPES))
    built = prolab(cli_env, "label-space", "--descriptors", descriptors, "--k", "4")
    directory = Path(built.stdout.strip().splitlines()[-1])
    assert prolab(cli_env, "verify").returncode == 0
    target = directory / "quality.json"
    data = bytearray(target.read_bytes())
    data[5] ^= 0x01
    target.write_bytes(bytes(data))
    result = prolab(cli_env, "verify")
    assert result.returncode == 1
    assert f"DAMAGED {directory}" in result.stdout and "quality.json: sha256 differs" in result.stdout


def test_deleted_artifact_behind_a_prefect_cache_record_is_recomputed(cli_env: dict[str, str]) -> None:
    descriptors = str(shared_path(CITYSCAPES))
    args = ["label-space", "--descriptors", descriptors, "--k", "6"]
    directory = Path(prolab(cli_env, *args).stdout.strip().splitlines()[-1])
    shutil.rmtree(directory)  # Prefect still holds a Cached record pointing here
    again = prolab(cli_env, *args)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == str(directory)
    assert (directory / "properties.parquet").is_file()
    assert f"{LABEL_SPACE}: computing {directory.name}" in again.stderr


def test_label_space_from_the_embedded_llm(cli_env: dict[str, str]) -> None:
    """``--llm local``: the packaged Gemma served on 127.0.0.1 describes the classes (the aspects
    prompt), and the label space is verified and repaired by default."""
    result = prolab(cli_env, "label-space", "--dataset", "demo", "--llm", "local", "--k", "12")
    assert result.returncode == 0, result.stderr[-3000:]
    directory = Path(result.stdout.strip().splitlines()[-1])
    store = Path(cli_env["PROLAB_ARTIFACTS"])
    (describe_dir,) = (store / "describe").iterdir()
    descriptions = json.loads((describe_dir / "descriptions.json").read_text())
    assert list(descriptions)[:3] == ["sky", "building", "road"] and all(descriptions.values())
    report = json.loads((describe_dir / "describe_report.json").read_text())
    assert report["model"] == "gemma-3-270m-q4_k_m" and report["calls_made"] >= 4 * 7  # one per class and aspect
    assert (describe_dir / "raw_replies.json").is_file()
    (verify_dir,) = (store / "verify").iterdir()
    assert json.loads((verify_dir / "verify_report.json").read_text())["enabled"]
    repair = json.loads((directory / "repair_report.json").read_text())
    assert repair["rounds"] == 2 and directory.parent.name == "repair"
    assert json.loads((directory / "label_space.json").read_text())["classes"][0] == "sky"
    quality = json.loads((directory / "quality.json").read_text())
    assert set(quality["nearest"]) == set(descriptions) and "dropped_descriptions" in quality


def test_a_repair_round_separates_two_colliding_classes_with_the_embedded_llm(cli_env: dict[str, str],
                                                                                tmp_path: Path) -> None:
    """sky and sidewalk described alike collide; one repair round asks the packaged Gemma what tells
    each from the other (once per ordered pair), and a rerun asks nothing."""
    from data.demo import DEMO_CLASSES

    same = ["flat grey surface", "seen in street scenes", "wide open area"]
    written = {name: same if name in ("sky", "sidewalk") else [f"{name} shape", f"{name} colour", f"{name} parts"]
               for name in DEMO_CLASSES}
    descriptors = tmp_path / "alike.json"
    descriptors.write_text(json.dumps(written))
    args = ["label-space", "--descriptors", str(descriptors), "--dataset", "demo", "--k", "8", "--repair-rounds", "1"]
    result = prolab(cli_env, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    directory = Path(result.stdout.strip().splitlines()[-1])
    report = json.loads((directory / "repair_report.json").read_text())
    assert [1, "sky", "sidewalk"] in report["pairs"] and report["rounds_run"] == 1
    assert report["llm_requests"] == 2 * len(report["pairs"]), "one request per ordered pair"
    answered = pd.read_parquet(directory / "repair.parquet")
    assert set(answered["target"]) <= {name for pair in report["pairs"] for name in pair[1:]}
    status = prolab(cli_env, "status", *args[1:])
    assert "repaired sky/sidewalk (round 1)" in status.stdout, status.stdout
    shutil.rmtree(directory)
    again = prolab(cli_env, *args)
    assert json.loads((directory / "repair_report.json").read_text())["llm_requests"] == 0, again.stderr[-2000:]
