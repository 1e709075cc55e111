"""The LLM endpoint dies mid-run (answers some classes, then cuts the connection and stops
listening): describe fails naming the classes left, keeps what was answered, writes no
partial artifact, and the next run asks only for the classes left."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.datasets import dataset_classes
from tasks.registry import LABEL_SPACE_STAGES
from tests.helpers.cli import last_line, prolab
from tests.helpers.fake_llm import FakeLLM, properties_of
from tests.helpers.store_checks import assert_store_sound

ANSWERED = 4


def test_server_dying_mid_run_keeps_answers_and_the_rerun_asks_only_the_rest(cli_env: dict[str, str]) -> None:
    classes = dataset_classes("camvid")
    store = Path(cli_env["PROLAB_ARTIFACTS"])
    with FakeLLM(die_after=ANSWERED) as dying:
        args = ["label-space", "--dataset", "camvid", "--llm", dying.base_url, "--model", "fake-model",
                "--concurrency", "2", "--max-retries", "1", "--k", "4", "--repair-rounds", "0"]
        failed = prolab(cli_env, *args)
    assert dying.dead.is_set()
    left = [name for name in classes if name not in dying.answered]
    assert len(dying.answered) == ANSWERED and len(left) == len(classes) - ANSWERED

    assert failed.returncode == 1, failed.stderr[-3000:]
    assert "Traceback" not in failed.stderr, failed.stderr[-3000:]
    message = failed.stderr.strip().splitlines()[-1]
    assert message.startswith("prolab: error: no descriptions for") and "APIConnectionError" in message
    assert all(repr(name) in message or name in message for name in left), message
    assert not any(f" {name}," in message or f" {name}:" in message for name in dying.answered), message
    assert f"The {ANSWERED} class(es) answered are kept" in message

    assert not (store / "describe").exists() or not any((store / "describe").iterdir()), "no partial artifact"
    cached = [json.loads(p.read_text())["identity"]["class"] for p in (store / ".cache" / "llm").glob("*.json")]
    assert sorted(cached) == sorted(dying.answered)
    assert assert_store_sound(store, allow_temporaries=False) == {}

    with FakeLLM(port=dying.port) as revived:
        directory = last_line(prolab(cli_env, *args))
        assert sorted({r.category for r in revived.asked()}) == sorted(left), "answered classes are not asked again"
    described = json.loads(next((store / "describe").glob("*/descriptions.json")).read_text())
    assert list(described) == classes and all(described[c] == properties_of(c) for c in classes)
    report = json.loads(next((store / "describe").glob("*/describe_report.json")).read_text())
    assert report["cached"] == ANSWERED and report["calls_made"] == len(left)
    assert directory.parent.name == "repair"
    assert set(assert_store_sound(store, allow_temporaries=False)) == set(LABEL_SPACE_STAGES)


def test_once_the_endpoint_is_unreachable_queued_classes_are_not_asked(tmp_path: Path) -> None:
    """Each queued class would wait out the client's whole retry backoff against a dead server."""
    import pytest

    from tasks.label_space.describe import DescribeError, describe_classes
    from tasks.label_space.llm.client import LLMSettings

    classes = [f"class {i}" for i in range(12)]
    with FakeLLM(die_after=2) as dying:
        settings = LLMSettings(base_url=dying.base_url, model="fake-model", api_key_env=None, max_retries=1,
                               concurrency=1)
        with pytest.raises(DescribeError) as caught:
            describe_classes(classes, settings, tmp_path)
    reasons = caught.value.reasons
    assert list(reasons) == classes[2:], "every class left is named, in label order"
    assert reasons[classes[2]].startswith("APIConnectionError")
    # The worker may already have taken the next class when the failure is seen: at most one more.
    assert all(reasons[name].startswith("not asked") for name in classes[4:])
    assert {r.category for r in dying.asked()} <= set(classes[:4]), "nothing queued was sent"
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_a_dead_server_stops_only_the_runs_that_would_ask_it(cli_env: dict[str, str]) -> None:
    """The preflight asks ``GET /models`` only while describe (or repair) has no artifact: once
    the descriptions are in the store, a rerun with another K runs with the server down; one
    that needs new descriptions is refused at once, naming the URL, before any flow run."""
    args = ["label-space", "--dataset", "demo", "--model", "fake-model", "--repair-rounds", "0"]
    with FakeLLM() as llm:
        url = llm.base_url
        first = last_line(prolab(cli_env, *args, "--llm", url, "--k", "4"))
    # closed: nothing listens on its port any more
    reclustered = last_line(prolab(cli_env, *args, "--llm", url, "--k", "5"))
    assert reclustered.is_dir() and reclustered != first
    refused = prolab(cli_env, *args, "--llm", url, "--k", "5", "--prompt", "aspects")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    assert f"describe.llm (--llm) {url}: the LLM server does not answer" in refused.stderr.strip().splitlines()[-1]
