"""label space for ADE20K from imported descriptions: 1,478 GPT-3.5 descriptions, K = 256.

describe (import) -> embed (all-MiniLM-L6-v2, CPU, empty cache) -> cluster (k-means, seed 0)
into an empty store, through the stage functions the flows call (no Prefect). Reports wall
time per stage and the process's peak resident memory (ru_maxrss, which includes the Python
and torch imports).
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

SHARED = Path(os.environ.get("PROLAB_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DESCRIPTORS = SHARED / "data" / "prolab_descriptors" / "ade20k_gpt3.5.json"


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    from tasks.cluster import plan_cluster, run_cluster
    from tasks.describe import plan_describe, run_describe
    from tasks.embed import plan_embed, run_embed
    from tasks.label_space import load_label_space
    from tasks.params import ClusterParams, DescribeParams, EmbedParams
    from tasks.store import ArtifactStore

    before = _peak_mib()
    with tempfile.TemporaryDirectory() as tmp:
        store = ArtifactStore(tmp)
        times = {}
        started = total = time.perf_counter()
        describe = DescribeParams(dataset="ade20k", descriptors=DESCRIPTORS)
        described_plan = plan_describe(describe)
        described = run_describe(described_plan, describe, store)
        times["describe"] = time.perf_counter() - started
        started = time.perf_counter()
        embed = EmbedParams()
        embedded_plan = plan_embed(described_plan, embed)
        embedded = run_embed(described, embedded_plan, embed, store)
        times["embed"] = time.perf_counter() - started
        started = time.perf_counter()
        cluster = ClusterParams(k=256, seed=0)
        label_space = run_cluster(embedded, plan_cluster(embedded_plan, cluster), cluster, store)
        times["cluster"] = time.perf_counter() - started
        total = time.perf_counter() - total
        space = load_label_space(label_space)
    assert space.num_classes == 150 and space.num_properties == 256
    print(" ".join(f"{stage}_seconds={seconds:.2f}" for stage, seconds in times.items()))
    print(f"peak_rss_mib={_peak_mib():.0f} (before the stages: {before:.0f})")
    print(f"ade20k_label_space_seconds={total:.2f}")


if __name__ == "__main__":
    main()
