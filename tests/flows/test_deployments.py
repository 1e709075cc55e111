"""The deployments of ``prefect.yaml`` run by a real worker on a real server, as users run them:
``prolab demo``, then ``prefect deployment run`` with changed and unchanged parameters."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from pathlib import Path
from uuid import UUID

from data.demo import DEMO_CLASSES
from tasks.processes import free_port
from tasks.reports import artifact_key
from tests.helpers.prefect_runs import (
    PREFECT, PROLAB, STAGES, DemoRun, api, pipeline_params, run_artifact_keys, run_command, stage_states,
    start_deployment, wait_final, write_descriptors,
)


def test_demo_runs_the_pipeline_and_prints_the_ui_and_the_run_address_last(demo_run: DemoRun) -> None:
    lines = demo_run.stdout.strip().splitlines()
    ui = demo_run.env["PREFECT_API_URL"].removesuffix("/api")
    assert lines[-2].startswith(f"Prefect UI: {ui}")
    assert lines[-1] == f"{ui}/runs/flow-run/{demo_run.flow_run_id}"
    summary = "\n".join(lines[:-2])
    assert "mIoU" in summary and "(one-hot CE: no evaluation of demo_ce" in summary
    assert all(f"{name} " in summary for name in DEMO_CLASSES), "every class's IoU is printed"
    assert [line.split()[0] for line in lines[-5:-2]] == ["label", "training", "evaluation"]
    assert wait_final(demo_run.env, demo_run.flow_run_id).state.name == "Completed"
    assert stage_states(demo_run.env, demo_run.flow_run_id, len(STAGES)) == dict.fromkeys(STAGES, "Completed")
    assert {path.parent.parent.name for path in demo_run.store.glob("*/*/manifest.json")} == set(STAGES)
    keys = run_artifact_keys(demo_run.env, demo_run.flow_run_id)
    assert {"describe", "embed", "label-space", "label-space-matrix", "label-space-sizes", "train", "train-curves",
            "evaluate", "evaluate-overlays", "evaluate-confusion-matrix"} <= keys, keys
    print(f"prolab demo (worker + deploy + first end-to-end run): {demo_run.seconds:.1f} s")


def test_an_unchanged_rerun_is_cached_in_every_stage(demo_run: DemoRun) -> None:
    started = time.monotonic()
    flow_run = wait_final(demo_run.env, start_deployment(demo_run.env, "end-to-end/end-to-end", demo_run.params))
    assert flow_run.state.name == "Completed", flow_run.state.message
    assert stage_states(demo_run.env, flow_run.id, len(STAGES)) == dict.fromkeys(STAGES, "Cached")
    print(f"cached end-to-end rerun: {time.monotonic() - started:.1f} s")


def test_editing_one_class_reruns_every_stage_and_embeds_only_its_new_texts(demo_run: DemoRun,
                                                                             tmp_path: Path) -> None:
    edited = write_descriptors(tmp_path / "descriptors.json", edited="car")
    params = pipeline_params(edited, demo_run.data_root)
    flow_run = wait_final(demo_run.env, start_deployment(demo_run.env, "end-to-end/end-to-end", params))
    assert flow_run.state.name == "Completed", flow_run.state.message
    assert stage_states(demo_run.env, flow_run.id, len(STAGES)) == dict.fromkeys(STAGES, "Completed")
    reports = [json.loads(path.read_text()) for path in demo_run.store.glob("embed/*/embed_report.json")]
    assert {(report["encoded"], report["reused"]) for report in reports} == {(21, 0), (3, 18)}


def test_a_stage_deployment_computes_only_that_stage(demo_run: DemoRun) -> None:
    params = {**demo_run.params, "label_space": {**demo_run.params["label_space"], "cluster": {"k": 5}}}
    before = set(demo_run.store.glob("*/*/manifest.json"))
    flow_run = wait_final(demo_run.env, start_deployment(demo_run.env, "cluster/cluster", params))
    assert flow_run.state.name == "Completed", flow_run.state.message
    assert stage_states(demo_run.env, flow_run.id, 1) == {"cluster": "Completed"}
    assert [path.parent.parent.name for path in set(demo_run.store.glob("*/*/manifest.json")) - before] == ["cluster"]


def test_the_predict_deployment_predicts_with_the_stored_run_and_an_unchanged_rerun_is_cached(
        demo_run: DemoRun) -> None:
    images = sorted((demo_run.data_root / "test").glob("*.png"))[:2]
    params = {**demo_run.params, "predict": {"images": [str(path) for path in images]}}
    runs = []
    for expected in ("Completed", "Cached"):
        flow_run = wait_final(demo_run.env, start_deployment(demo_run.env, "predict/predict", params))
        assert flow_run.state.name == "Completed", flow_run.state.message
        assert stage_states(demo_run.env, flow_run.id, 1) == {"predict": expected}
        runs.append(flow_run.id)
    [predicted] = demo_run.store.glob("predict/*/predictions.json")
    assert [r["name"] for r in json.loads(predicted.read_text())["images"]] == [path.stem for path in images]
    assert {"predict", artifact_key("predict", "vis", images[0].stem)} <= run_artifact_keys(demo_run.env, runs[0])


def _files(run: Path) -> set[str]:
    """A training run's files, with the timestamp mmengine names its log directory and files by made alike."""
    return {re.sub(r"\d{8}_\d{6}", "<time>", path.relative_to(run).as_posix()) for path in run.rglob("*")
            if path.is_file()}


def _task_run_logs(env: dict[str, str], flow_run_id: UUID, timeout: float = 30) -> list[str]:
    """The messages logged in the flow run's task runs, once the server has them (shipped in batches)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline, page = time.monotonic() + timeout, 200
    this_run = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    with api(env) as client:
        while True:
            logs, offset = [], 0
            while len(logs) == offset:  # the server answers a page at a time
                logs += client.read_logs(this_run, limit=page, offset=offset)
                offset += page
            messages = [log.message for log in logs if log.task_run_id is not None]
            if any("Iter(train)" in message for message in messages) or time.monotonic() > deadline:
                return messages
            time.sleep(1)


def test_the_train_deployment_trains_in_two_processes_logged_in_its_task_run_and_the_run_evaluates(
        demo_run: DemoRun) -> None:
    params = {**demo_run.params, "train": {**demo_run.params["train"], "nproc_per_node": 2}}
    started = time.monotonic()
    flow_run = wait_final(demo_run.env, start_deployment(demo_run.env, "train/train", params), timeout=600)
    assert flow_run.state.name == "Completed", flow_run.state.message
    print(f"train/train in two processes: {time.monotonic() - started:.1f} s")
    assert stage_states(demo_run.env, flow_run.id, 1) == {"train": "Completed"}
    logs = _task_run_logs(demo_run.env, flow_run.id)
    assert any(re.search(r"Iter\(train\) \[2/2\]", message) for message in logs), logs[-20:]
    assert any("GPU number: 2" in message for message in logs), "mmengine's world size, from rank 0's output"

    manifests = {path.parent: json.loads(path.read_text()) for path in demo_run.store.glob("train/*/manifest.json")}
    (two,) = [run for run, manifest in manifests.items() if manifest["params"].get("world_size") == 2]
    (one,) = [run for run, manifest in manifests.items()
              if manifest["inputs"] == manifests[two]["inputs"] and "world_size" not in manifest["params"]]
    assert _files(two) == _files(one), "the same files as the one-process run of the same parameters"

    evaluated = wait_final(demo_run.env, start_deployment(demo_run.env, "evaluate/evaluate", params))
    assert evaluated.state.name == "Completed", evaluated.state.message
    assert stage_states(demo_run.env, evaluated.id, 1) == {"evaluate": "Completed"}
    (metrics,) = [path for path in demo_run.store.glob("evaluate/*/manifest.json")
                  if json.loads(path.read_text())["inputs"]["run"] == f"train/{two.name}"]
    assert 0 <= json.loads((metrics.parent / "metrics.json").read_text())["mIoU"] <= 100


def test_a_stage_without_its_input_fails_naming_the_stage_to_run_first(demo_run: DemoRun) -> None:
    params = {**demo_run.params, "label_space": {**demo_run.params["label_space"], "cluster": {"k": 6}}}
    flow_run = wait_final(demo_run.env, start_deployment(demo_run.env, "train/train", params))
    assert flow_run.state.name == "Failed"
    assert "run the cluster stage first" in flow_run.state.message
    assert stage_states(demo_run.env, flow_run.id, 0, timeout=2) == {}


def test_a_bad_parameter_is_refused_with_its_name_before_any_run_exists(demo_run: DemoRun) -> None:
    with api(demo_run.env) as client:
        runs_before = len(client.read_flow_runs())
    cases = {
        '{"params": {"label_space": {"cluster": {"k": 0}}}}':
            "'params.label_space.cluster.k'. Failure reason: 0 is less than the minimum of 1",
        '{"params": {"train": {"cfg_option": {}}}}': "('cfg_option' was unexpected)",
        '{"params": {"evaluate": {"split": "training"}}}': "'params.evaluate.split'",
    }
    for params, expected in cases.items():
        result = run_command(demo_run.env, PREFECT, "deployment", "run", "end-to-end/end-to-end", "--params", params)
        output = result.stdout + result.stderr
        assert result.returncode != 0 and expected in output, output
    with api(demo_run.env) as client:
        assert len(client.read_flow_runs()) == runs_before


def test_demo_refuses_a_bad_parameter_naming_it_before_any_run_exists(demo_run: DemoRun) -> None:
    with api(demo_run.env) as client:
        runs_before = len(client.read_flow_runs())
    result = run_command(demo_run.env, PROLAB, "demo", "--params", '{"label_space": {"cluster": {"k": 0}}}')
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert ("prolab: error: --params: label_space.cluster.k: Input should be greater than or equal to 1"
            in result.stderr), result.stderr[-3000:]
    with api(demo_run.env) as client:
        assert len(client.read_flow_runs()) == runs_before


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_server_stop_ends_server_and_worker_and_a_restart_keeps_the_database(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")}
    env.update(PROLAB_PREFECT_HOME=str(tmp_path / "prefect"), PROLAB_PREFECT_PORT=str(free_port()),
               PREFECT_HOME=str(tmp_path / "user-prefect"))  # where `server start` saves the prolab profile
    try:
        started = run_command(env, PROLAB, "server", "start")
        assert started.returncode == 0, started.stderr
        ui = started.stdout.strip()
        assert run_command(env, PROLAB, "worker", "start").returncode == 0
        pids = [json.loads((tmp_path / "prefect" / name).read_text())["pid"] for name in ("server.json", "worker.json")]
        assert all(_alive(pid) for pid in pids)

        stopped = run_command(env, PROLAB, "server", "stop")
        assert stopped.returncode == 0 and "stopped" in stopped.stderr
        assert not any(_alive(pid) for pid in pids)
        assert run_command(env, PROLAB, "server", "status").stdout.strip() == f"{ui} down"

        assert run_command(env, PROLAB, "server", "start").returncode == 0
        with urllib.request.urlopen(f"{ui}/api/work_pools/prolab-local") as response:  # made before the restart
            assert json.load(response)["type"] == "process"
    finally:
        run_command(env, PROLAB, "server", "stop")
