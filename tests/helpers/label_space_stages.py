"""describe (import) -> embed -> cluster as plain functions on one store, and a count of the
texts the embedder encodes: for the tests that prove caching by counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.label_space import embed as embed_module
from tasks.params import ClusterParams, DescribeParams, EmbedParams, EndToEndParams, LabelSpaceParams
from tasks.registry import LABEL_SPACE_STAGES, run_stages
from tasks.store import ArtifactStore


class EncodeCounter:
    """Wraps the real encoder and counts the texts it is asked to encode."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.texts: list[str] = []
        real = embed_module.load_encoder

        def counting_loader(name: str):
            encoder = real(name)
            original = encoder.encode

            def encode(texts, **kwargs):
                self.texts.extend(texts)
                return original(texts, **kwargs)

            encoder.encode = encode
            return encoder

        monkeypatch.setattr(embed_module, "load_encoder", counting_loader)


def build(descriptors: Path, store: ArtifactStore, k: int = 32, seed: int = 0) -> dict[str, Path]:
    """The three stages' artifact directories for imported ``descriptors``, as the label-space flow computes them."""
    params = LabelSpaceParams(describe=DescribeParams(descriptors=descriptors), embed=EmbedParams(),
                              cluster=ClusterParams(k=k, seed=seed))
    return run_stages(EndToEndParams(label_space=params), store, LABEL_SPACE_STAGES)
