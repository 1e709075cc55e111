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

    from tasks.label_space.descriptors import read_descriptions
    from tasks.label_space.embed import resolve_embedder
    from tasks.params import DescribeParams, EmbedParams, EndToEndParams, LabelSpaceParams
    from tasks.registry import run_stages
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
            params = EndToEndParams(label_space=LabelSpaceParams(describe=DescribeParams(descriptors=DESCRIPTORS),
                                                                 embed=EmbedParams(embedder=MODEL)))
            described = run_stages(params, store, ["describe"])
            started = time.perf_counter()
            run_stages(params, store, ["embed"], given=described)
            stage_times.append(time.perf_counter() - started)
    print(f"texts={len(texts)} model={MODEL}")
    print(f"raw_encode_seconds={min(raw_times):.2f} (all: {', '.join(f'{t:.2f}' for t in raw_times)})")
    print(f"embed_stage_seconds={min(stage_times):.2f} (all: {', '.join(f'{t:.2f}' for t in stage_times)})")
    print(f"embed_overhead={min(stage_times) / min(raw_times):.3f}")


if __name__ == "__main__":
    main()
