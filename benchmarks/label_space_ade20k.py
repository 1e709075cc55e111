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
    from prolab_models.label_space import load_label_space
    from tasks.params import ClusterParams, DescribeParams, EndToEndParams, LabelSpaceParams
    from tasks.registry import LABEL_SPACE_STAGES, run_stages
    from tasks.store import ArtifactStore

    before = _peak_mib()
    with tempfile.TemporaryDirectory() as tmp:
        store = ArtifactStore(tmp)
        params = EndToEndParams(label_space=LabelSpaceParams(
            describe=DescribeParams(dataset="ade20k", descriptors=DESCRIPTORS), cluster=ClusterParams(k=256, seed=0)))
        times, paths = {}, {}
        total = time.perf_counter()
        for stage in LABEL_SPACE_STAGES:  # one at a time, each timed
            started = time.perf_counter()
            paths.update(run_stages(params, store, [stage], given=paths))
            times[stage] = time.perf_counter() - started
        total = time.perf_counter() - total
        space = load_label_space(paths[LABEL_SPACE_STAGES[-1]])
    assert space.num_classes == 150 and space.num_properties == 256
    print(" ".join(f"{stage}_seconds={seconds:.2f}" for stage, seconds in times.items()))
    print(f"peak_rss_mib={_peak_mib():.0f} (before the stages: {before:.0f})")
    print(f"ade20k_label_space_seconds={total:.2f}")


if __name__ == "__main__":
    main()
