"""describe (import) -> embed -> cluster as plain functions on one store, and a count of the
texts the embedder encodes: for the tests that prove caching by counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks import embed as embed_module
from tasks.cluster import plan_cluster, run_cluster
from tasks.describe import plan_describe, run_describe
from tasks.embed import plan_embed, run_embed
from tasks.params import ClusterParams, DescribeParams, EmbedParams
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
    describe_params = DescribeParams(dataset=None, descriptors=descriptors)
    embed_params, cluster_params = EmbedParams(), ClusterParams(k=k, seed=seed)
    described = plan_describe(describe_params)
    embedded = plan_embed(described, embed_params)
    clustered = plan_cluster(embedded, cluster_params)
    d = run_describe(described, describe_params, store)
    e = run_embed(d, embedded, embed_params, store)
    c = run_cluster(e, clustered, cluster_params, store)
    return {"describe": d, "embed": e, "cluster": c}
