"""describe_classes against a scripted fake OpenAI-compatible server: faults, retries, cache, key.

The fake (tests/helpers/fake_llm.py, shared with the reliability tests and the describe
benchmark) answers each class from its own script of responses, then with a normal
completion, and records every request, so tests count calls.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.label_space import describe, repair
from tasks.label_space.describe import DescribeError, describe_classes
from tasks.label_space.llm.client import LLMEndpointError, LLMSettings, resolve_api_key, served_models
from tasks.params import DescribeParams, EndToEndParams, LabelSpaceParams
from tasks.processes import free_port
from tests.helpers.fake_llm import FakeLLM, Step, completion, properties_of


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM() as fake:
        yield fake


def settings_for(base_url: str, **overrides: Any) -> LLMSettings:
    """Settings with backoff bounded so fault tests take about a second."""
    values: dict[str, Any] = dict(
        base_url=base_url, model="fake-model", api_key_env=None, timeout_s=5, max_retries=2,
        concurrency=4, empty_reply_retries=2,
    )
    return LLMSettings(**(values | overrides))


def test_descriptions_come_back_in_label_order_with_raw_replies(fake_llm: FakeLLM, tmp_path: Path) -> None:
    classes = ["road", "car", "sky", "tree", "person"]
    report = describe_classes(classes, settings_for(fake_llm.base_url), tmp_path)
    assert list(report.descriptions) == classes
    assert report.descriptions == {name: properties_of(name) for name in classes}
    assert report.raw_replies["car"] == "- car shape\n- car colour\n- car context"
    assert (report.calls_made, report.cached, report.retried) == (5, 0, 0)
    assert (report.prompt_tokens, report.completion_tokens) == (500, 50)


def test_second_run_makes_no_request_whatever_the_base_url(fake_llm: FakeLLM, tmp_path: Path) -> None:
    classes = ["road", "car", "sky"]
    first = describe_classes(classes, settings_for(fake_llm.base_url), tmp_path)
    assert len(fake_llm.asked()) == 3
    same_model_elsewhere = settings_for(fake_llm.base_url.replace("127.0.0.1", "localhost"))
    second = describe_classes(classes, same_model_elsewhere, tmp_path)
    assert len(fake_llm.asked()) == 3
    assert (second.calls_made, second.cached) == (0, 3)
    assert second.descriptions == first.descriptions and second.raw_replies == first.raw_replies
    hosted = LLMSettings(base_url="https://llm.example.invalid/v1", model="fake-model", api_key_env="PROLAB_UNSET_KEY")
    assert describe_classes(classes, hosted, tmp_path).cached == 3, "a fully cached run needs neither network nor key"
    describe_classes(classes, settings_for(fake_llm.base_url, model="other-model"), tmp_path)
    assert len(fake_llm.asked()) == 6, "another model's answers are its own"


def test_editing_one_class_asks_only_for_that_class(fake_llm: FakeLLM, tmp_path: Path) -> None:
    describe_classes(["road", "car", "sky"], settings_for(fake_llm.base_url), tmp_path)
    report = describe_classes(["road", "automobile", "sky", "bus"], settings_for(fake_llm.base_url), tmp_path)
    assert {r.category for r in fake_llm.asked()[3:]} == {"automobile", "bus"}
    assert (report.calls_made, report.cached) == (2, 2)


def test_repair_and_describe_ask_through_one_client_into_one_answer_cache(tmp_path: Path) -> None:
    with FakeLLM(reply=lambda name: "- bright blue\n- white clouds") as fake:
        settings = settings_for(fake.base_url)
        described = describe_classes(["sky"], settings, tmp_path)
        for _ in range(2):  # a repair rerun: its asker starts afresh, the cache does not
            with repair.CachedAsker(lambda: contextlib.nullcontext(settings), settings.model, "few-shot",
                                    tmp_path) as ask:
                assert ask("sky", "sidewalk") == ["bright blue", "white clouds"]
                assert ask("sky", "sidewalk") == ["bright blue", "white clouds"]
        assert len(fake.asked("sky|sidewalk")) == 1, "the repaired question, asked four times, went out once"
        assert describe_classes(["sky"], settings, tmp_path).cached == 1
        assert len(fake.asked("sky")) == 1 and described.descriptions["sky"] == ["bright blue", "white clouds"]
    assert len(list(tmp_path.glob("*.json"))) == 2, "one cache: a file per question, describe's and repair's"


def test_rate_limit_waits_as_retry_after_says_then_succeeds(fake_llm: FakeLLM, tmp_path: Path) -> None:
    fake_llm.script["car"] = [Step(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})]
    report = describe_classes(["car"], settings_for(fake_llm.base_url), tmp_path)
    first, second = fake_llm.asked("car")
    assert 0.9 <= second.at - first.at < 3
    assert report.descriptions["car"] == properties_of("car") and report.retried == 1


def test_server_errors_are_retried_until_success(fake_llm: FakeLLM, tmp_path: Path) -> None:
    fake_llm.script["car"] = [Step(500, {"error": {"message": "boom"}}), Step(503, {"error": {"message": "busy"}})]
    report = describe_classes(["car", "road"], settings_for(fake_llm.base_url), tmp_path)
    assert len(fake_llm.asked("car")) == 3
    assert report.descriptions["car"] == properties_of("car") and report.retried == 2


def test_read_timeout_is_retried_until_success(fake_llm: FakeLLM, tmp_path: Path) -> None:
    fake_llm.script["car"] = [Step(delay_s=2.0)]
    started = time.monotonic()
    report = describe_classes(["car"], settings_for(fake_llm.base_url, timeout_s=0.5), tmp_path)
    assert len(fake_llm.asked("car")) == 2
    assert report.descriptions["car"] == properties_of("car") and report.retried == 1
    assert time.monotonic() - started < 2.0


def test_an_empty_reply_is_asked_again_with_a_nudge(fake_llm: FakeLLM, tmp_path: Path) -> None:
    fake_llm.script["car"] = [Step(body=completion("Sure, a car!"))]
    report = describe_classes(["car"], settings_for(fake_llm.base_url), tmp_path)
    first, second = fake_llm.asked("car")
    assert "Reply only" not in first.content and "Reply only" in second.content
    assert report.descriptions["car"] == properties_of("car")
    assert (report.calls_made, report.retried) == (2, 1)


def test_classes_without_properties_are_reported_by_name_and_the_rest_kept(
    fake_llm: FakeLLM, tmp_path: Path
) -> None:
    html = {"Content-Type": "text/html"}
    fake_llm.script["blob"] = [Step(body=b"{not json"), Step(body=b"<html></html>", headers=html), Step(body=b"[]")]
    fake_llm.script["void"] = [Step(body=completion(None)), Step(body=completion("")), Step(body={"choices": []})]
    classes = ["void", "car", "blob", "road"]
    with pytest.raises(DescribeError) as caught:
        describe_classes(classes, settings_for(fake_llm.base_url), tmp_path)
    assert caught.value.classes == ["void", "blob"]
    assert pickle.loads(pickle.dumps(caught.value)).classes == ["void", "blob"], "Prefect pickles task errors"
    assert "void" in str(caught.value) and "blob" in str(caught.value) and "kept" in str(caught.value)
    assert len(fake_llm.asked("blob")) == len(fake_llm.asked("void")) == 3
    report = describe_classes(["car", "road"], settings_for(fake_llm.base_url), tmp_path)
    assert report.cached == 2 and len(fake_llm.asked()) == 8, "answers obtained before the failure are kept"


def test_refused_connection_names_every_class(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(DescribeError) as caught:
        describe_classes(["car", "road"], settings_for(closed, max_retries=1), tmp_path)
    assert caught.value.classes == ["car", "road"]
    assert "APIConnectionError" in str(caught.value)
    assert not list(tmp_path.iterdir())


def test_the_key_reaches_the_server_but_no_file_log_or_error(
    fake_llm: FakeLLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
) -> None:
    canary = f"sk-canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("PROLAB_TEST_LLM_KEY", canary)
    # An endpoint that echoes the key in its error body, as some do for a wrong key.
    fake_llm.script["secret"] = [Step(401, {"error": {"message": f"Incorrect API key provided: {canary}"}})]
    settings = settings_for(fake_llm.base_url, api_key_env="PROLAB_TEST_LLM_KEY")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DescribeError) as caught:
        describe_classes(["car", "secret"], settings, tmp_path)
    assert {r.authorization for r in fake_llm.asked()} == {f"Bearer {canary}"}
    assert caught.value.classes == ["secret"] and "AuthenticationError" in str(caught.value)
    out, err = capfd.readouterr()
    texts = [str(caught.value), caplog.text, out, err, repr(settings), settings.model_dump_json()]
    texts += [path.read_text() for path in tmp_path.rglob("*")]
    assert not [text for text in texts if canary in text]


def test_a_key_is_required_for_remote_endpoints_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROLAB_TEST_LLM_KEY", raising=False)
    remote = LLMSettings(base_url="https://api.openai.com/v1", model="gpt-4o-mini", api_key_env="PROLAB_TEST_LLM_KEY")
    with pytest.raises(ValueError, match="PROLAB_TEST_LLM_KEY is not set"):
        resolve_api_key(remote)
    local = LLMSettings(base_url="http://localhost:8000/v1", model="m", api_key_env="PROLAB_TEST_LLM_KEY")
    assert resolve_api_key(local)


def test_class_names_must_be_unique_one_line_names(tmp_path: Path) -> None:
    settings = settings_for("http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="appears twice"):
        describe_classes(["car", "car"], settings, tmp_path)
    with pytest.raises(ValueError, match="one-line"):
        describe_classes(["car\ncategory: x"], settings, tmp_path)


def test_a_corrupt_cache_entry_is_asked_again(fake_llm: FakeLLM, tmp_path: Path) -> None:
    describe_classes(["car"], settings_for(fake_llm.base_url), tmp_path)
    (entry,) = tmp_path.glob("*.json")
    entry.write_text("{truncated")
    report = describe_classes(["car"], settings_for(fake_llm.base_url), tmp_path)
    assert report.calls_made == 1 and report.descriptions["car"] == properties_of("car")
    assert json.loads(entry.read_text())["properties"] == properties_of("car")


# --------------------------------------------------------------------- a URL named without a model


def _url_params(base_url: str) -> EndToEndParams:
    return EndToEndParams(label_space=LabelSpaceParams(describe=DescribeParams(llm=base_url)))


def test_a_url_without_a_model_asks_for_the_one_model_its_server_lists(tmp_path: Path) -> None:
    """vLLM and llama.cpp's server answer only to the name of the model they serve: that name,
    not OpenAI's default, is asked, keyed and cached; and a plan that asked a server is never
    remembered, since the server may serve another model next time."""
    with FakeLLM(models=("served-model",)) as fake:
        params = _url_params(fake.base_url)
        assert served_models(fake.base_url, None) == ["served-model"]
        assert describe.plan(params, {}).params["model"] == "served-model"
        assert describe.plan(params, {}).sources is None
        repaired = repair.plan(params, {"label_space": "cluster:k", "verification": "verify:k"})
        assert repaired.params["model"] == "served-model" and repaired.sources is None
        with describe.llm_settings(params.label_space.describe) as settings:
            describe_classes(["car"], settings, tmp_path)
        assert [request.model for request in fake.asked()] == ["served-model"]
    named = EndToEndParams(label_space=LabelSpaceParams(describe=DescribeParams(llm=fake.base_url, model="m")))
    assert describe.plan(named, {}).sources == (), "a model given is known without a server: remembered"


def test_a_url_serving_several_models_is_refused_naming_them() -> None:
    with FakeLLM(models=("llama-2-7b", "llama-2-13b")) as fake:
        with pytest.raises(LLMEndpointError, match=r"--model.*serves 2 models \(llama-2-7b, llama-2-13b\)"):
            describe.plan(_url_params(fake.base_url), {})


def test_a_url_that_lists_no_models_is_named_at_once() -> None:
    down = f"http://127.0.0.1:{free_port()}/v1"
    started = time.monotonic()
    with pytest.raises(LLMEndpointError, match=rf"--model.*{re.escape(down)}/models did not list its models"):
        describe.plan(_url_params(down), {})
    assert time.monotonic() - started < 2, "asked once, without the chat calls' retries"
    with FakeLLM() as fake, pytest.raises(LLMEndpointError, match="/v2/models did not list its models: HTTP Error 404"):
        served_models(fake.base_url.replace("/v1", "/v2"), None)
