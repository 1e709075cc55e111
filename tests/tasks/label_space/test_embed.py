"""The embedder: ProLab's mean pooling whatever the model's own config says, and clear errors;
the check made before a flow run (``check_embedder``) accepts what loads and refuses, in one line,
what would not."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tasks.label_space.embed import EmbedderError, check_embedder, load_encoder, resolve_embedder
from tasks.processes import free_port


def test_a_cls_pooled_model_is_embedded_with_mean_pooling(tmp_path: Path) -> None:
    """BGE ships CLS pooling; the paper mean-pools. A local copy of the packaged model saved
    with CLS pooling (BGE's layout) must embed exactly as the mean-pooled original."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    original = SentenceTransformer(resolve_embedder("all-MiniLM-L6-v2"), device="cpu")
    transformer = original[0]
    cls_pooled = SentenceTransformer(
        modules=[transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode="cls"), Normalize()],
        device="cpu")
    cls_pooled.save(str(tmp_path / "cls-model"))

    encoder = load_encoder(str(tmp_path / "cls-model"))
    assert encoder[1].get_config_dict()["pooling_mode"] == "mean"
    texts = ["a flat grey surface", "green leaves on branches"]
    ours = encoder.encode(texts)
    assert np.allclose(ours, original.encode(texts), atol=1e-5)
    assert not np.allclose(ours, cls_pooled.encode(texts), atol=1e-3)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_a_directory_that_is_not_a_model_is_named(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="not a sentence-transformers or Hugging Face model directory"):
        resolve_embedder(str(tmp_path))


def _cached(cache: Path, repo: str, file: str = "config.json") -> None:
    """``repo`` in a Hugging Face cache as ``hf_hub_download`` leaves it: a snapshot that ``refs/main`` names."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    (folder / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (folder / "snapshots" / ("0" * 40) / file).write_text("{}")


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache of the test's own, where sentence-transformers would look."""
    monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", str(tmp_path / "hf-cache"))
    return tmp_path / "hf-cache"


def test_the_check_accepts_what_loads(hf_cache: Path) -> None:
    _cached(hf_cache, "BAAI/bge-base-en-v1.5")
    _cached(hf_cache, "sentence-transformers/all-mpnet-base-v2", "modules.json")  # a bare name: its organisation's
    for name in ("all-MiniLM-L6-v2", resolve_embedder("all-MiniLM-L6-v2"), "BAAI/bge-base-en-v1.5",
                 "all-mpnet-base-v2"):
        check_embedder(name)


@pytest.mark.parametrize("name, expected", [
    ("no-such-org/no-such-model", "embedder 'no-such-org/no-such-model' could not be loaded (no network here: use a "
                                  "local path or a packaged model): not in the Hugging Face cache ({cache})"),
    ("/nonexistent/model", "embedder '/nonexistent/model': no such model directory"),
    ("org/model/extra", "embedder 'org/model/extra': no such model directory"),
    ("{cache}", "{cache}: not a sentence-transformers or Hugging Face model directory"),
])
def test_the_check_refuses_what_would_not_load_offline(hf_cache: Path, name: str, expected: str) -> None:
    hf_cache.mkdir()
    with pytest.raises(EmbedderError) as refused:
        check_embedder(name.format(cache=hf_cache))
    assert str(refused.value) == expected.format(cache=hf_cache)


class _Hub(http.server.BaseHTTPRequestHandler):
    """The hub's model API as it answers for a missing repository, and for a gated one."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        gated = "gated" in self.path
        self.send_response(403 if gated else 404)
        self.send_header("X-Error-Code", "GatedRepo" if gated else "RepoNotFound")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Online, against a local stand-in of the hub's API (this machine reaches no network); its URL."""
    from huggingface_hub import constants

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    yield url
    server.shutdown()


def test_online_the_hub_is_asked_about_a_model_not_in_the_cache(hf_cache: Path, online: str) -> None:
    check_embedder("some-org/gated-model")  # it exists: a token may open it
    with pytest.raises(EmbedderError, match=f"embedder 'no-such-org/no-such-model' could not be loaded: not in the "
                                            f"Hugging Face cache \\({hf_cache}\\), nor on the hub at {online}$"):
        check_embedder("no-such-org/no-such-model")


def test_online_a_hub_that_does_not_answer_is_named(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    with pytest.raises(EmbedderError, match=f"embedder 'no-such-org/no-such-model' could not be loaded: .*, and "
                                            f"the hub at {dead} did not answer \\(ConnectError: "):
        check_embedder("no-such-org/no-such-model")
