"""rerun: the end-to-end flow run again with nothing changed, against its cold run.

One process, a Prefect server of its own (SQLite, 127.0.0.1, a temporary home), an empty
store, the embedded defaults except the LLM: the demo classes' descriptions imported from a
small descriptor file (the LLM would only lengthen the cold run), K = 16, the shipped `demo`
config (ViT-Adapter-T, 300 iterations) and its evaluation. The rerun must be a lookup of
every stage (Prefect shows them Cached); its time is the flow's own overhead. Process
start-up (imports, about 8-15 s for the ``prolab`` command on a busy 2-core machine) is not
part of either figure.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path


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
            from flows.pipeline import end_to_end_flow
            from tasks.params import EndToEndParams

            descriptors = Path(tmp) / "demo.json"
            descriptors.write_text(json.dumps({c: [f"{c} shape", f"{c} colour", f"{c} texture", f"{c} size",
                                                   f"where a {c} is"] for c in DEMO_CLASSES}))
            params = EndToEndParams.model_validate({"label_space": {"describe": {"descriptors": str(descriptors)}}})
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
