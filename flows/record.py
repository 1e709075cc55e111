"""An unchanged rerun recorded in Prefect without making the user wait for it.

When every artifact of ``prolab label-space``, ``train`` or ``evaluate`` is in the store
already, the command prints its answer at once (``tasks.registry.reuse``) and hands its flow,
with the same parameters, to this process: each stage is a lookup there, and the UI shows the
run with every task Cached, as if the command had run it. Importing Prefect and running a flow
costs 2-3 s on 2 cores, most of an unchanged rerun, so it happens after the answer.

The process is detached (a session of its own, no terminal, nothing inherited but the
environment): it outlives the command, and a pipe reading the command's output (``LS=$(prolab
label-space ... | tail -1)``) closes when the command ends. It appends one line per run to
``record.log`` in the local Prefect home (``$PROLAB_PREFECT_HOME``, default ``.prefect/``): the
run's address and state, or why it could not be recorded.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tasks import PROJECT_ROOT

log = logging.getLogger("prolab.record")

# The flows of flows/pipeline.py that a command may hand over, by name.
FLOWS = ("label_space_flow", "train_on_label_space_flow", "evaluate_checkpoint_flow")


def log_file() -> Path:
    from flows.server import local_server

    return local_server().home / "record.log"


def start(flow: str, parameters: dict[str, Any]) -> tuple[int, Path]:
    """Start recording ``flow(**parameters)`` (JSON-able values) in the background; its pid and log."""
    if flow not in FLOWS:
        raise ValueError(f"{flow}: not a flow a command hands over ({', '.join(FLOWS)})")
    # The same code as this process (its checkout first on the path, and nothing from the current
    # directory: -P), in the same directory, so that relative paths in the parameters mean the same.
    path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen([sys.executable, "-P", "-m", "flows.record", flow, json.dumps(parameters)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True, env={**os.environ, "PYTHONPATH": path})
    return process.pid, log_file()


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.record FLOW PARAMETERS_JSON``: run the flow against the pinned server and
    append one line to the log: the run's address and state, or why it could not be recorded."""
    flow_name, parameters = (argv or sys.argv[1:])[:2]
    path = log_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(f"%(asctime)s pid {os.getpid()} %(levelname)s %(message)s", "%F %T"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    try:
        if flow_name not in FLOWS:
            raise ValueError(f"{flow_name}: not a flow a command hands over")
        from flows.server import use_local_server

        use_local_server()
        import flows.pipeline
        from flows.deploy import flow_run_url

        state = getattr(flows.pipeline, flow_name)(**json.loads(parameters), return_state=True)
        log.info("%s: %s %s", flow_name, state.name, flow_run_url(state.state_details.flow_run_id))
        return 0 if state.is_completed() else 1
    except Exception:
        log.exception("%s %s: not recorded", flow_name, parameters)
        return 1


if __name__ == "__main__":
    sys.exit(main())
