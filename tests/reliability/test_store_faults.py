"""Corruption and concurrency: a flipped byte is never trusted, and two runs of the same inputs
on one store (label space, or the whole pipeline) both succeed with one artifact per stage."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tasks.registry import LABEL_SPACE_STAGES
from tasks.store import QUARANTINE, TMP_PREFIX
from tests.helpers.cli import CITYSCAPES, PROJECT_ROOT, PROLAB, last_line, prolab, shared_path
from tests.helpers.prefect_runs import STAGES, pipeline_params, write_descriptors
from tests.helpers.store_checks import assert_store_sound

# The end-to-end flow in a process of its own, as a worker runs it: EndToEndParams JSON in argv[1],
# the evaluation's directory on stdout; the store is $PROLAB_ARTIFACTS.
END_TO_END = ("import sys; from flows.pipeline import end_to_end_flow; from tasks.params import EndToEndParams; "
              "print(end_to_end_flow(EndToEndParams.model_validate_json(sys.argv[1])))")


def test_a_flipped_byte_in_a_label_space_artifact_is_listed_then_recomputed(cli_env: dict[str, str]) -> None:
    store = Path(cli_env["PROLAB_ARTIFACTS"])
    args = ["label-space", "--descriptors", str(shared_path(CITYSCAPES)), "--k", "4"]
    directory = last_line(prolab(cli_env, *args))
    target = directory / "properties.parquet"
    original = target.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    target.write_bytes(bytes(flipped))

    listed = prolab(cli_env, "verify")
    assert listed.returncode == 1 and "Traceback" not in listed.stderr
    assert f"DAMAGED {directory}" in listed.stdout and "properties.parquet: sha256 differs" in listed.stdout
    assert listed.stdout.count("DAMAGED") == 1, "only the damaged artifact is listed"

    again = prolab(cli_env, *args)
    assert last_line(again) == directory
    assert "is damaged and will be recomputed" in again.stderr
    assert f"repair: computing {directory.name}" in again.stderr, "the label space is the repair stage's"
    assert "cluster: computing" not in again.stderr, "only the damaged stage reruns"
    assert target.read_bytes() == original, "the same inputs give the same bytes again"
    assert len(list((store / QUARANTINE).iterdir())) == 1, "the damaged copy is kept aside, not trusted"
    assert prolab(cli_env, "verify").returncode == 0
    assert assert_store_sound(store, allow_temporaries=False)


def test_two_label_space_runs_at_once_both_succeed_with_one_artifact_per_stage(cli_env: dict[str, str]) -> None:
    store = Path(cli_env["PROLAB_ARTIFACTS"])
    args = [PROLAB, "label-space", "--descriptors", str(shared_path(CITYSCAPES)), "--k", "5"]
    runs = [subprocess.Popen(args, env=cli_env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    results = [(run.communicate(timeout=300), run.returncode) for run in runs]
    for (out, err), code in results:
        assert code == 0, err[-3000:]
    outputs = {out.strip().splitlines()[-1] for (out, _), _ in results}
    assert len(outputs) == 1, outputs
    found = assert_store_sound(store, allow_temporaries=False)
    assert {stage: len(keys) for stage, keys in found.items()} == {stage: 1 for stage in LABEL_SPACE_STAGES}
    assert not list(store.rglob(".*.tmp")) and not list(store.rglob("*.tmp"))


def test_two_end_to_end_runs_at_once_both_succeed_with_one_artifact_per_stage(
    cli_env: dict[str, str], tmp_path: Path, demo_root: Path,
) -> None:
    store = Path(cli_env["PROLAB_ARTIFACTS"])
    params = json.dumps(pipeline_params(write_descriptors(tmp_path / "descriptors.json"), demo_root))
    logs = [tmp_path / f"run-{i}.log" for i in range(2)]
    started = time.monotonic()
    runs = []
    for log in logs:  # stderr to files: a full pipe would stall one run and serialise the two
        with open(log, "w") as stderr:
            runs.append(subprocess.Popen([sys.executable, "-c", END_TO_END, params], env=cli_env, cwd=PROJECT_ROOT,
                                         stdout=subprocess.PIPE, stderr=stderr, text=True))
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    for run, log in zip(runs, logs):
        assert run.returncode == 0, log.read_text()[-4000:]
    assert len({out.strip().splitlines()[-1] for out in outputs}) == 1, outputs
    found = assert_store_sound(store, allow_temporaries=False)
    assert {stage: len(keys) for stage, keys in found.items()} == dict.fromkeys(STAGES, 1)
    assert prolab(cli_env, "verify").returncode == 0
    assert not list(store.rglob(f"{TMP_PREFIX}*")), "no temporary is left anywhere under the store"
    assert not list(store.glob("train/.work-*")), "the resumable work dir is gone once its run is an artifact"
    print(f"two concurrent end-to-end runs: {time.monotonic() - started:.1f} s")
