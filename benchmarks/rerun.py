"""rerun: the end-to-end flow run again with nothing changed, against its cold run.

One process, a Prefect server of its own (SQLite, 127.0.0.1, a temporary home), an empty
store: the demo classes imported from a small descriptor file, K = 4, the demo dataset and a
2-iteration training budget of the tiny demo model. The rerun must be a lookup of every stage
(Prefect shows them Cached); its time is the flow's own overhead. Process start-up (imports,
about 8-15 s for the ``prolab`` command on a busy 2-core machine) is not part of either figure.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path

TINY = {
    "model.backbone.embed_dim": 48, "model.backbone.depth": 2, "model.backbone.interaction_indexes": [[0, 0], [1, 1]],
    "model.decode_head.in_channels": [48] * 4, "model.decode_head.channels": 16,
    "model.auxiliary_head.in_channels": 48, "model.auxiliary_head.channels": 8,
    "train_cfg.max_iters": 2, "train_cfg.val_interval": 2, "default_hooks.checkpoint.interval": 2,
    "custom_hooks": [{"type": "PreciseBNHook", "num_batches": 2, "interval": 2}],
    "train_dataloader.batch_size": 2, "train_dataloader.num_workers": 0, "train_dataloader.persistent_workers": False,
    "val_dataloader.num_workers": 0, "val_dataloader.persistent_workers": False,
    "test_dataloader.num_workers": 0, "test_dataloader.persistent_workers": False,
}


def main() -> None:
    from data.demo import DEMO_CLASSES
    from flows.server import LocalServer, server_env, start, stop

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        server = start(LocalServer(Path(tmp) / "prefect", port))
        try:
            os.environ.update(server_env(server))
            from flows.end_to_end import end_to_end_flow
            from tasks.params import EndToEndParams

            descriptors = Path(tmp) / "demo.json"
            descriptors.write_text(json.dumps({c: [f"{c} shape", f"{c} colour", f"where a {c} is"]
                                               for c in DEMO_CLASSES}))
            params = EndToEndParams.model_validate({
                "label_space": {"describe": {"descriptors": str(descriptors)}, "cluster": {"k": 4}},
                "train": {"config": "demo", "cfg_options": TINY},
            })
            store = str(Path(tmp) / "artifacts")
            started = time.perf_counter()
            cold_result = end_to_end_flow(params, artifacts=store)
            cold = time.perf_counter() - started
            reruns = []
            for _ in range(3):
                started = time.perf_counter()
                again = end_to_end_flow(params, artifacts=store)
                reruns.append(time.perf_counter() - started)
                assert again == cold_result
        finally:
            stop(server)
    rerun = min(reruns)
    print(f"cold_seconds={cold:.2f} reruns={', '.join(f'{r:.2f}' for r in reruns)}")
    print(f"rerun_fraction_of_cold={rerun / cold:.4f}")
    print(f"rerun_seconds={rerun:.2f}")


if __name__ == "__main__":
    main()
