"""embed: the embed stage against a raw sentence-transformers encode of the same texts.

Texts: ADE20K's 1,478 GPT-3.5 descriptions (lower-cased, as the stage embeds them), model
all-MiniLM-L6-v2 on the CPU, batch 64. Both sides load the model and encode from scratch (the
stage with an empty store, so its vector cache misses every text); the stage also reads the
descriptions table and writes Parquet, a manifest and the vector cache. Each side runs twice,
alternately; the best of each is compared.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

SHARED = Path(os.environ.get("PROLAB_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DESCRIPTORS = SHARED / "data" / "prolab_descriptors" / "ade20k_gpt3.5.json"
MODEL = "all-MiniLM-L6-v2"
ROUNDS = 2


def main() -> None:
    from sentence_transformers import SentenceTransformer

    from tasks.describe import plan_describe, run_describe
    from tasks.descriptors import read_descriptions
    from tasks.embed import plan_embed, resolve_embedder, run_embed
    from tasks.params import DescribeParams, EmbedParams
    from tasks.store import ArtifactStore

    texts = [t.lower() for texts in read_descriptions(DESCRIPTORS).values() for t in texts]
    raw_times, stage_times = [], []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        model = SentenceTransformer(resolve_embedder(MODEL), device="cpu")
        model.encode(texts, batch_size=64, convert_to_numpy=True)
        raw_times.append(time.perf_counter() - started)

        with tempfile.TemporaryDirectory() as tmp:
            store = ArtifactStore(tmp)
            describe = DescribeParams(dataset=None, descriptors=DESCRIPTORS)
            described_plan = plan_describe(describe)
            described = run_describe(described_plan, describe, store)
            params = EmbedParams(embedder=MODEL)
            started = time.perf_counter()
            run_embed(described, plan_embed(described_plan, params), params, store)
            stage_times.append(time.perf_counter() - started)
    print(f"texts={len(texts)} model={MODEL}")
    print(f"raw_encode_seconds={min(raw_times):.2f} (all: {', '.join(f'{t:.2f}' for t in raw_times)})")
    print(f"embed_stage_seconds={min(stage_times):.2f} (all: {', '.join(f'{t:.2f}' for t in stage_times)})")
    print(f"embed_overhead={min(stage_times) / min(raw_times):.3f}")


if __name__ == "__main__":
    main()
