"""Single-stage flows, one per stage of ``tasks.registry.STAGES``: compute one stage from the
artifacts its upstream stages left in the store.

Each takes the end-to-end parameters, so a stage's deployment is run with the same JSON as
the end-to-end one, and its inputs are found by the keys those parameters give the upstream
stages. An upstream artifact that is absent is not computed behind the user's back: the run
fails and names the stage to run first. Then the stage's inputs and parameters are checked as
the pipeline's flows check theirs (``tasks.preflight``). The flows are module attributes named
``<stage>_flow``, which is what prefect.yaml's entrypoints name.
"""

from __future__ import annotations

from prefect import Flow, flow, get_run_logger

from tasks.params import EndToEndParams
from tasks.prefect_tasks import execute_as_task
from tasks.preflight import preflight
from tasks.registry import STAGES, Stage, run_stages, stored_inputs
from tasks.store import ArtifactStore


def _stage_flow(stage: Stage) -> Flow:
    def run_one_stage(params: EndToEndParams = EndToEndParams(), artifacts: str | None = None) -> str:
        store = ArtifactStore(artifacts)
        inputs = stored_inputs(params, store, stage.name)
        preflight(params, [stage.name], inputs, store=store)
        get_run_logger().info("%s from %s", stage.name, ", ".join(map(str, inputs.values())) or "its parameters alone")
        return str(run_stages(params, store, [stage.name], given=inputs, execute=execute_as_task(store))[stage.name])

    run_one_stage.__doc__ = f"Only the {stage.name} stage, from the artifacts its inputs left in the store; " \
                            f"returns its artifact directory."
    run_one_stage.__qualname__ = run_one_stage.__name__ = f"{stage.name}_flow"
    return flow(run_one_stage, name=stage.name, log_prints=True)


FLOWS: dict[str, Flow] = {stage.name: _stage_flow(stage) for stage in STAGES}
globals().update({f"{name}_flow": stage_flow for name, stage_flow in FLOWS.items()})
