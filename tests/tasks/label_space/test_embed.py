"""The embedder: ProLab's mean pooling whatever the model's own config says, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.label_space.embed import EmbedderError, load_encoder, resolve_embedder


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
