"""Living with a store: ``prolab gc`` removes exactly what no kept run needs, and ``prolab status``
explains each pipeline against its own last run. Real ``prolab`` processes, a real Prefect server,
writers that really hold (or held) the training lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from data.demo import DEMO_CLASSES
from tasks.params import EndToEndParams
from tasks.registry import LABEL_SPACE, LABEL_SPACE_STAGES, run_stages
from tasks.store import ArtifactStore
from tests.helpers.cli import PROJECT_ROOT, last_line, prolab

# A training writer as the train stage is one: the key's writer lock held, its resumable work dir
# filled, until its stdin closes (or it is killed, as a crash or the OOM killer would).
TRAINING_WRITER = """
import sys
from tasks.store import ArtifactStore
store = ArtifactStore(sys.argv[1])
with store.lock("train", sys.argv[2]):
    work = store.work_dir("train", sys.argv[2])
    work.mkdir(parents=True)
    (work / "iter_1.pth").write_bytes(b"weights" * 1000)
    print("holding", flush=True)
    sys.stdin.read()
"""


def _training_writer(root: Path, key: str) -> subprocess.Popen[str]:
    writer = subprocess.Popen([sys.executable, "-c", TRAINING_WRITER, str(root), key], cwd=PROJECT_ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert writer.stdout.readline().strip() == "holding"
    return writer


def _descriptors(path: Path, variant: str = "") -> Path:
    path.write_text(json.dumps({c: [f"{c} shape{variant}", f"colour of a {c}", f"where a {c} is"]
                                for c in DEMO_CLASSES}))
    return path


def _listed(output: str, action: str) -> set[str]:
    """The paths ``prolab gc`` printed with ``action`` (remove, removed, keep, kept)."""
    return {line.split()[3] for line in output.splitlines() if line.startswith(action + " ")}


def _why(output: str, path: str) -> str:
    """What ``prolab gc`` said of ``path``: its kind and why it goes or stays."""
    (line,) = [line for line in output.splitlines() if line.split()[3:4] == [path]]
    return line.split(maxsplit=4)[4]


@pytest.fixture
def writers(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for writer in started:
        writer.kill()
        writer.wait(10)


def test_gc_removes_exactly_what_no_kept_run_needs_and_a_rerun_recomputes_only_that(
        cli_env: dict[str, str], tmp_path: Path, writers: list[subprocess.Popen[str]]) -> None:
    root = Path(cli_env["PROLAB_ARTIFACTS"])
    descriptors = str(_descriptors(tmp_path / "demo.json"))

    def label_space(k: int) -> Path:
        return last_line(prolab(cli_env, "label-space", "--descriptors", descriptors, "--k", str(k)))

    kept, superseded, damaged, latest = (label_space(k) for k in (3, 4, 5, 6))  # four runs of one pipeline
    clusters = {path: _input(path, "label_space") for path in (kept, superseded, damaged, latest)}
    quality = damaged / "quality.json"
    quality.write_text(quality.read_text() + " ")
    assert ArtifactStore(root).get(LABEL_SPACE, damaged.name) is None  # a damaged artifact is quarantined
    (quarantined,) = (root / ".quarantine").iterdir()
    dead = "d" * 16
    writers.append(_training_writer(root, dead))
    writers[-1].kill()  # its lock dies with it; its work dir stays
    writers[-1].wait(10)
    writers.append(_training_writer(root, "a" * 16))  # alive: holds its lock through gc

    # With the default bound, only bookkeeping of what is already gone goes: everything else is young.
    default = prolab(cli_env, "gc")
    assert default.returncode == 0, default.stderr
    assert _listed(default.stdout, "remove") == {f".prefect-results/{LABEL_SPACE}-{damaged.name}",
                                                 f".locks/train-{dead}.lock"}, default.stdout
    assert _why(default.stdout, f"train/.work-{dead}").startswith("work dir: resumable")

    args = ["gc", "--keep-days", "0", "--keep", str(kept)]
    listed = prolab(cli_env, *args)
    plans = {f".cache/plans/{p.name}" for p in (root / ".cache" / "plans").iterdir()}
    # The superseded run's label space and clustering go, and so does the clustering under the
    # damaged (quarantined) label space: no kept run reads it.
    gone = {f"{LABEL_SPACE}/{superseded.name}", clusters[superseded], clusters[damaged]}
    expected = {f"train/.work-{dead}", f".prefect-results/{LABEL_SPACE}-{damaged.name}",
                f".quarantine/{quarantined.name}", f".locks/train-{dead}.lock", *gone} | plans | {
                    f".prefect-results/{ref.replace('/', '-')}" for ref in gone}
    assert _listed(listed.stdout, "remove") == expected, listed.stdout
    assert all((root / path).exists() for path in expected), "a dry run removes nothing"
    assert _why(listed.stdout, f"train/.work-{'a' * 16}") == "work dir: a running process holds its lock"
    assert _why(listed.stdout, f"{LABEL_SPACE}/{kept.name}") == f"artifact: kept with --keep {kept}"
    assert _why(listed.stdout, clusters[kept]) == f"artifact: an input of {LABEL_SPACE}/{kept.name}"
    assert _why(listed.stdout, f"{LABEL_SPACE}/{latest.name}").startswith(
        f"artifact: in the latest run of pipeline 'descriptors {descriptors}'")

    removed = prolab(cli_env, *args, "--yes")
    assert _listed(removed.stdout, "removed") == expected, removed.stdout
    assert not any((root / path).exists() for path in expected)
    survivors = {f"{d.parent.name}/{d.name}" for d in ArtifactStore(root).iter_artifacts()}
    upstream = {f"{stage}/{p.name}" for stage in LABEL_SPACE_STAGES[:LABEL_SPACE_STAGES.index("cluster")]
                for p in (root / stage).iterdir()}
    assert survivors == {f"{LABEL_SPACE}/{kept.name}", f"{LABEL_SPACE}/{latest.name}", clusters[kept],
                         clusters[latest], *upstream}
    assert (root / "train" / f".work-{'a' * 16}" / "iter_1.pth").is_file()
    assert ArtifactStore(root).verify() == {}

    again = prolab(cli_env, "label-space", "--descriptors", descriptors, "--k", "4")
    assert last_line(again) == superseded and (superseded / "properties.parquet").is_file()
    computed = {line.split("computing")[0].split()[-1] for line in again.stderr.splitlines() if ": computing" in line}
    assert computed == {"cluster:", f"{LABEL_SPACE}:"}, again.stderr[-3000:]


def _input(artifact: Path, role: str) -> str:
    """The ``<stage>/<key>`` that an artifact's manifest names as its input ``role``."""
    return json.loads((artifact / "manifest.json").read_text())["inputs"][role]


def test_status_explains_each_pipeline_against_its_own_last_run(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    store = ArtifactStore(root)
    first, second = _descriptors(tmp_path / "first.json"), _descriptors(tmp_path / "second.json", " seen twice")

    def params(descriptors: Path, k: int) -> EndToEndParams:
        return EndToEndParams.model_validate({"label_space": {"describe": {"descriptors": str(descriptors)},
                                                              "cluster": {"k": k}}})

    for descriptors, k in ((first, 3), (second, 4), (first, 5)):  # the two pipelines' runs interleave
        run_stages(params(descriptors, k), store, LABEL_SPACE_STAGES)

    def status(*args: str) -> dict[str, str]:
        result = prolab({**os.environ, "PROLAB_ARTIFACTS": str(root)}, "status", *args)
        assert result.returncode == 0, result.stderr
        return {name: why for name, _, why in (line.split(maxsplit=2) for line in result.stdout.splitlines())}

    changed = status("--descriptors", str(first), "--k", "6")
    assert changed.pop(LABEL_SPACE).startswith("changed since the last run: input label_space: cluster/")
    assert changed == {**dict.fromkeys(LABEL_SPACE_STAGES[:LABEL_SPACE_STAGES.index("cluster")], "up to date"),
                       "cluster": "changed since the last run: parameter label_space.cluster.k: 5 -> 6"}
    assert status("--descriptors", str(second), "--k", "7")["cluster"] == \
        "changed since the last run: parameter label_space.cluster.k: 4 -> 7"
    _descriptors(second, " seen thrice")
    edited = status("--descriptors", str(second), "--k", "4")
    assert edited["describe"].startswith("changed since the last run: input descriptions_sha256: ")
    assert edited["verify"].startswith("changed since the last run: input descriptions: describe/")
    assert edited["embed"].startswith("changed since the last run: input descriptions: verify/")
    assert set(status("--dataset", "camvid", "--k", "4").values()) == {"never run"}
