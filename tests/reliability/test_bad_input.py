"""What a careful, hostile user tries, through the CLI (options, config files, datasets, label
spaces) and through a deployment's parameters: each case exits non-zero (or ends its flow run
Failed before any work) with one clear message naming what is wrong and where, prints no Python
traceback, and loses nothing already computed.

The CLI cases that are refused before any flow run call the command's ``main`` in this process
(``prolab_in_process``): a process start would cost more than the check. The ``prolab`` process
itself is refused the same way in tests/flows/test_cli_*.py."""

from __future__ import annotations

import json
import os
import unicodedata
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from data.demo import DEMO_CLASSES
from prolab_models.configs import CONFIG_DIR, CONFIGS
from tasks.store import ArtifactStore
from tests.helpers.cli import CITYSCAPES, last_line, prolab, prolab_in_process, shared_path
from tests.helpers.demo_runs import tiny_options
from tests.helpers.label_space_factory import make_label_space

Case = tuple[list[str], list[str]]


@pytest.fixture(scope="module")
def env(prefect_server: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One store for every case, holding a label space computed before any bad input."""
    store = tmp_path_factory.mktemp("store")
    env = {**prefect_server, "PROLAB_ARTIFACTS": str(store), "HF_HUB_OFFLINE": "1"}
    last_line(prolab(env, "label-space", "--descriptors", str(shared_path(CITYSCAPES)), "--k", "4"))
    return env


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Hostile inputs on disk: a symlinked directory, a huge file, UTF-16, NaN, broken label spaces."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "a-directory").mkdir()
    (root / "descriptors.json").symlink_to(root / "a-directory")
    with open(root / "huge.json", "wb") as huge:  # sparse: 65 MiB on paper, nothing on disk
        huge.truncate(65 * 1024 * 1024)
    (root / "utf16.json").write_bytes(json.dumps({"car": ["red"]}).encode("utf-16"))
    (root / "nan.json").write_text('{"car": [NaN]}')
    (root / "negative.json").write_text('{"car": [-1]}')
    (root / "repeated.json").write_text('{"car": ["red"], "road": ["grey"], "car": ["blue"]}')
    make_label_space(root / "reversed", list(reversed(DEMO_CLASSES)), k=4)
    (root / "store-file").write_text("not a directory")
    missing = make_label_space(root / "missing-file", DEMO_CLASSES, k=4)
    (missing / "class_properties.parquet").unlink()
    truncated = make_label_space(root / "truncated", DEMO_CLASSES, k=4)
    data = (truncated / "properties.parquet").read_bytes()
    (truncated / "properties.parquet").write_bytes(data[: len(data) // 2])
    make_label_space(root / "good", DEMO_CLASSES, k=4)
    (root / "not-a-checkpoint.pth").write_bytes(os.urandom(4096))
    with zipfile.ZipFile(root / "zip-not-a-checkpoint.pth", "w") as archive:
        archive.writestr("notes.txt", "a zip archive, as torch.save writes, without a checkpoint in it")
    with zipfile.ZipFile(root / "damaged.pth", "w") as archive:  # torch.save's records, data.pkl unreadable
        archive.writestr("damaged/data.pkl", b"\x80\x02garbage")
        archive.writestr("damaged/version", "3\n")
    (root / "empty-run").mkdir()
    (root / "demo-descriptors.json").write_text(json.dumps({c: [f"{c} shape", f"{c} colour"] for c in DEMO_CLASSES}))
    (root / "reversed-descriptors.json").write_text(json.dumps({c: [f"{c} shape"] for c in reversed(DEMO_CLASSES)}))
    (root / "three-classes.json").write_text(json.dumps({c: [f"{c} shape", f"{c} colour"] for c in DEMO_CLASSES[:3]}))
    # class names a reader cannot tell apart (JSON keys that differ, so no repeated key)
    (root / "case-clash.json").write_text(json.dumps({"Car": ["red"], "road": ["grey"], "car ": ["blue"]}))
    (root / "spacing-clash.json").write_text(json.dumps({"traffic light": ["red"], "traffic  light": ["green"]}))
    (root / "unicode-clash.json").write_text(json.dumps({"café": ["warm"], unicodedata.normalize("NFD", "café"): ["x"]}))
    (root / "new-names-clash.json").write_text(json.dumps(["Bicycle", "bicycle"]))
    Image.new("RGB", (8, 8)).save(root / "image.png")
    _write_configs(root / "configs")
    return root


def _write_configs(directory: Path) -> None:
    """Config files that are broken in each way a hand-written one can be."""
    directory.mkdir()
    demo = CONFIG_DIR / CONFIGS["demo"]
    (directory / "syntax.py").write_text("crop_size = (128, 128)\nmodel = dict(type='EncoderDecoder'\n")
    (directory / "no-base.py").write_text("_base_ = ['./nope.py']\n")
    (directory / "base-syntax.py").write_text("_base_ = ['./syntax.py']\n")
    (directory / "loop.py").write_text("_base_ = ['./loop.py']\n")
    (directory / "raises.py").write_text(f"_base_ = ['{demo}']\ncrop_size = (undefined_size, 128)\n")
    (directory / "no-head.py").write_text(f"_base_ = ['{demo}']\nmodel = dict(_delete_=True, type='EncoderDecoder')\n")
    (directory / "model-only.py").write_text(
        f"_base_ = ['{CONFIG_DIR}/_base_/models/upernet_vit-adapter-t_prolab_cpu.py']\n")
    (directory / "config.txt").write_text(demo.read_text())
    (directory / "a-directory.py").mkdir()


LABEL_SPACE: dict[str, Case] = {
    "descriptors symlink to a directory": (["--descriptors", "{in}/descriptors.json"],
                                           ["{in}/descriptors.json", "is a directory"]),
    "descriptors over the size bound": (["--descriptors", "{in}/huge.json"], ["{in}/huge.json", "too large"]),
    "UTF-16 descriptors": (["--descriptors", "{in}/utf16.json"], ["{in}/utf16.json", "not UTF-8"]),
    "NaN description": (["--descriptors", "{in}/nan.json"], ['{in}/nan.json: class "car": description 1 is NaN']),
    "negative number as description": (["--descriptors", "{in}/negative.json"],
                                       ['class "car": description 1 is a number']),
    "descriptors outside every root": (["--descriptors", "/etc/hostname"], ["/etc/hostname", "JSON"]),
    "descriptors repeating a class": (["--descriptors", "{in}/repeated.json"],
                                      ['{in}/repeated.json: key "car" appears twice in one object']),
    "--artifacts is a file": (["--descriptors", CITYSCAPES, "--artifacts", "{in}/store-file"],
                              ["{in}/store-file", "Not a directory"]),
    "--artifacts URL with an unknown protocol": (["--artifacts", "nosuch://bucket/prolab"],
                                                 ["artifact store nosuch://bucket/prolab", "Protocol not known"]),
    "--artifacts URL that cannot be reached": (["--artifacts", "file://{in}/store-file/prolab"],
                                               ["artifact store file://{in}/store-file/prolab", "Not a directory"]),
    "--k nan": (["--k", "nan"], ["--k", "invalid int value: 'nan'"]),
    "--seed -1": (["--seed", "-1"], ["--seed: Input should be greater than or equal to 0"]),
    "--concurrency 0": (["--dataset", "camvid", "--llm", "http://127.0.0.1:9/v1", "--concurrency", "0"],
                        ["--concurrency: Input should be greater than or equal to 1"]),
    # refused before the flow run (tasks.preflight), not after describe, verify and embed
    "--k beyond the descriptions of the file": (["--k", "187"], ["k=187: must be between 1 and the number of "
                                                                 "descriptions (186 in {cityscapes_file})"]),
    "--k far beyond the descriptions of the file": (["--k", "5000"], ["k=5000: must be between 1 and the number"]),
    "--embedder neither packaged nor in the Hugging Face cache (offline)": (
        ["--embedder", "no-such-org/no-such-model"],
        ["embedder 'no-such-org/no-such-model' could not be loaded (no network here", "not in the Hugging Face cache"]),
    "--embedder a directory that is not a model": (["--embedder", "{in}/a-directory"],
                                                   ["{in}/a-directory: not a sentence-transformers or Hugging Face "
                                                    "model directory"]),
    "--embedder a path that does not exist": (["--embedder", "{in}/no-such-model"],
                                              ["embedder '{in}/no-such-model': no such model directory"]),
    "descriptors naming a class in two cases and spacings": (
        ["--descriptors", "{in}/case-clash.json"],
        ["{in}/case-clash.json: class names 'Car' and 'car ' differ only in case and spacing"]),
    "descriptors naming a class with repeated whitespace": (
        ["--descriptors", "{in}/spacing-clash.json"],
        ["class names 'traffic light' and 'traffic  light' differ only in spacing"]),
    "descriptors naming a class in two Unicode forms": (
        ["--descriptors", "{in}/unicode-clash.json"],
        ["{in}/unicode-clash.json: class names", r"('caf\xe9' and 'cafe\u0301') differ only in Unicode form"]),
}

MODEL: dict[str, Case] = {
    "label space outside the store, not a label space": (["train", "--label-space", "/etc"],
                                                         ["/etc", "not a label space"]),
    "label-space dir missing a file": (["train", "--label-space", "{in}/missing-file"],
                                       ["{in}/missing-file", "class_properties.parquet"]),
    "truncated parquet in a label space": (["train", "--label-space", "{in}/truncated"],
                                           ["{in}/truncated/properties.parquet"]),
    "label space from another dataset": (["evaluate", "--label-space", "{cityscapes}", "--checkpoint",
                                          "{in}/damaged.pth"],
                                         ["label space has 19 classes but the dataset ProLabDemoDataset has 7"]),
    "damaged checkpoint": (["evaluate", "--label-space", "{in}/good", "--checkpoint", "{in}/damaged.pth"],
                           ["{in}/damaged.pth: not a readable PyTorch checkpoint (Unsupported operand"]),
    "checkpoint that is not one": (["evaluate", "--label-space", "{in}/good", "--checkpoint",
                                    "{in}/not-a-checkpoint.pth"],
                                   ["{in}/not-a-checkpoint.pth: not a PyTorch checkpoint"]),
    "zip archive that is not a checkpoint": (["evaluate", "--label-space", "{in}/good", "--checkpoint",
                                              "{in}/zip-not-a-checkpoint.pth"],
                                             ["{in}/zip-not-a-checkpoint.pth: not a PyTorch checkpoint (a zip "
                                              "archive without the data.pkl and version in one directory"]),
    "run directory without a checkpoint": (["evaluate", "--label-space", "{in}/good", "--checkpoint",
                                            "{in}/empty-run"], ["{in}/empty-run", "no checkpoint"]),
    "--cfg-options value of the wrong type": (["train", "--label-space", "{in}/good", "--cfg-options",
                                               "train_cfg.val_interval=often"],
                                              ["cfg_options train_cfg.val_interval='often'", "sets a number there"]),
    "--cfg-options NaN learning rate": (["train", "--label-space", "{in}/good", "--cfg-options",
                                         "optim_wrapper.optimizer.lr=nan"],
                                        ["cfg_options optim_wrapper.optimizer.lr=nan: not a finite number"]),
    "--cfg-options argument the head does not take": (["train", "--label-space", "{in}/good", "--cfg-options",
                                                       "model.decode_head.temprature=0.1"],
                                                      ["model.decode_head.temprature: PropertyUPerHead takes no "
                                                       "argument 'temprature'"]),
    "--cfg-options type nobody registered": (["train", "--label-space", "{in}/good", "--cfg-options",
                                              "model.decode_head.type=UperHeadd"],
                                             ["model.decode_head.type='UperHeadd' is not in mmseg's MODELS registry"]),
    "label space of the dataset's classes in another order": (["train", "--label-space", "{in}/reversed"],
                                                              ["the same classes as the dataset ProLabDemoDataset in "
                                                               "another order (label 0 is 'sky'"]),
    "--nproc-per-node 0": (["train", "--label-space", "{in}/good", "--nproc-per-node", "0"],
                           ["--nproc-per-node: Input should be greater than or equal to 1"]),
    "--nnodes 2 under torchrun": (["train", "--label-space", "{in}/good", "--nproc-per-node", "2", "--nnodes", "2"],
                                  ["--launcher: Value error, torchrun starts processes on its own node only; "
                                   "nnodes=2 needs launcher 'slurm'"]),
    "--launcher that is neither torchrun nor srun": (["train", "--label-space", "{in}/good", "--launcher", "mpi"],
                                                     ["argument --launcher: invalid choice: 'mpi'"]),
    "--held-out naming a class in two cases": (["train", "--label-space", "{in}/good", "--held-out", "car,Car"],
                                               ["--held-out: Value error, class names 'car' and 'Car' differ only in "
                                                "case"]),
    "evaluate holding out a class the run trained on": (["evaluate", "--label-space", "{in}/good", "--checkpoint",
                                                         "{in}/damaged.pth", "--held-out", "car"],
                                                        ["{in}/damaged.pth: trained holding out no class, evaluated "
                                                         "with --held-out car; evaluate it with no --held-out"]),
    "--held-out-images neither drop nor ignore": (["train", "--label-space", "{in}/good", "--held-out", "car",
                                                   "--held-out-images", "skip"],
                                                  ["--held-out-images: invalid choice: 'skip'"]),
    "negative --calibration": (["evaluate", "--label-space", "{in}/good", "--checkpoint", "{in}/damaged.pth",
                                "--held-out", "car", "--calibration", "-0.1"],
                               ["--calibration: Input should be greater than or equal to 0"]),
    "--calibration without held-out classes": (["evaluate", "--label-space", "{in}/good", "--checkpoint",
                                                "{in}/damaged.pth", "--calibration", "0.1"],
                                               ["--calibration 0.1: it lowers the trained classes' scores against "
                                                "classes scored from words; give --held-out, or leave it at 0"]),
}

# prolab train --config FILE: the file's name in a one-line message.
CONFIG_FILES: dict[str, Case] = {
    "config file that does not exist": (["{in}/configs/missing.py"], ["config '{in}/configs/missing.py': no such file"]),
    "config with a Python syntax error": (["{in}/configs/syntax.py"],
                                          ["config {in}/configs/syntax.py: Python syntax error at line 2"]),
    "config whose _base_ is missing": (["{in}/configs/no-base.py"],
                                       ["config {in}/configs/no-base.py: its _base_ './nope.py' does not exist"]),
    "config whose _base_ has a syntax error": (["{in}/configs/base-syntax.py"],
                                               ["config {in}/configs/syntax.py (a _base_ of "
                                                "{in}/configs/base-syntax.py): Python syntax error"]),
    "config whose _base_ chain loops": (["{in}/configs/loop.py"],
                                        ["config {in}/configs/loop.py", "its _base_ files lead back to it"]),
    "config raising when it runs": (["{in}/configs/raises.py"],
                                    ["config {in}/configs/raises.py: NameError: name 'undefined_size'"]),
    "config without a decode head": (["{in}/configs/no-head.py"],
                                     ["config {in}/configs/no-head.py: no model.decode_head"]),
    "config without datasets": (["{in}/configs/model-only.py"],
                                ["config {in}/configs/model-only.py: no train_dataloader.dataset"]),
    "config that is not a .py file": (["{in}/configs/config.txt"],
                                      ["config {in}/configs/config.txt: not a config file (expected a .py file"]),
    "config that is a directory": (["{in}/configs/a-directory.py"],
                                   ["config {in}/configs/a-directory.py: is a directory"]),
}

# A deployment's parameters (EndToEndParams as JSON), each beside valid ones. The server refuses
# what the published schema can say (types, bounds, unknown fields) before a run exists
# (tests/flows/test_deployments.py); every run, whoever starts it, validates them all again.
DEPLOYMENT: dict[str, tuple[dict[str, Any], list[str]]] = {
    "k = 0": ({"label_space": {"cluster": {"k": 0}}},
              ["params.label_space.cluster.k: Input should be greater than or equal to 1"]),
    "k = -3": ({"label_space": {"cluster": {"k": -3}}},
               ["params.label_space.cluster.k: Input should be greater than or equal to 1"]),
    "k = 'many'": ({"label_space": {"cluster": {"k": "many"}}},
                   ["params.label_space.cluster.k: Input should be a valid integer"]),
    "k = 4.5": ({"label_space": {"cluster": {"k": 4.5}}},
                ["params.label_space.cluster.k: Input should be a valid integer, got a number with a fractional"]),
    "concurrency above 64": ({"label_space": {"describe": {"concurrency": 65}}},
                             ["params.label_space.describe.concurrency: Input should be less than or equal to 64"]),
    "empty embedder name": ({"label_space": {"embed": {"embedder": ""}}},
                            ["params.label_space.embed.embedder: String should have at least 1 character"]),
    "llm not an http(s) URL": ({"label_space": {"describe": {"llm": "ftp://example"}}},
                               ["params.label_space.describe.llm", "http(s) base URL, got 'ftp://example'"]),
    "neither dataset nor descriptors": ({"label_space": {"describe": {"dataset": None, "descriptors": None}}},
                                        ["params.label_space.describe", "give a dataset"]),
    "unknown top-level field": ({"trian": {}}, ["params.trian: Extra inputs are not permitted"]),
    "misspelt nested field": ({"train": {"cfg_option": {}}}, ["params.train.cfg_option: Extra inputs are not"]),
    "split not val or test": ({"evaluate": {"split": "training"}},
                              ["params.evaluate.split: Input should be 'val' or 'test'"]),
    "calibration above the scores' range": ({"evaluate": {"calibration": 1.5}},
                                            ["params.evaluate.calibration: Input should be less than or equal to 1"]),
    "held-out images neither drop nor ignore": ({"train": {"held_out": ["car"], "held_out_images": "skip"}},
                                                ["params.train.held_out_images: Input should be 'drop' or 'ignore'"]),
    "cfg_options not an object": ({"train": {"cfg_options": "train_cfg.max_iters=4"}},
                                  ["params.train.cfg_options: Input should be a valid dictionary"]),
    "cfg_options value of the wrong type": ({"train": {"cfg_options": {"train_cfg.max_iters": "many"}}},
                                            ["cfg_options train_cfg.max_iters='many'", "sets a number there (300)"]),
    "NaN learning rate": ({"train": {"cfg_options": {"optim_wrapper.optimizer.lr": float("nan")}}},
                          ["cfg_options optim_wrapper.optimizer.lr=nan: not a finite number"]),
    "descriptors that do not exist": ({"label_space": {"describe": {"descriptors": "/nonexistent/descriptors.json"}}},
                                      ["/nonexistent/descriptors.json: no such file"]),
    "descriptors path to a system file": ({"label_space": {"describe": {"descriptors": "/etc/hostname"}}},
                                          ["/etc/hostname: malformed JSON"]),
    "config that does not exist": ({"train": {"config": "/nonexistent/config.py"}},
                                   ["config '/nonexistent/config.py': no such file"]),
    "data root that does not exist": ({"train": {"data_root": "/nonexistent/demo"}},
                                      ["/nonexistent/demo: dataset root not found"]),
    # refused by the run's first step (tasks.preflight), not by a stage after the ones before it ran
    "k beyond the descriptions of the file": ({"label_space": {"cluster": {"k": 15}}},
                                              ["k=15: must be between 1 and the number of descriptions (14 in "
                                               "{in}/demo-descriptors.json)"]),
    "embedder that cannot be loaded": ({"label_space": {"embed": {"embedder": "no-such-org/no-such-model"}}},
                                       ["embedder 'no-such-org/no-such-model' could not be loaded"]),
    "descriptors of another dataset's classes": ({"label_space": {"describe": {"descriptors": "{in}/three-classes.json"}}},
                                                 ["{in}/three-classes.json: label space has 3 classes but the dataset "
                                                  "ProLabDemoDataset has 7"]),
    "descriptors of the dataset's classes in another order": (
        {"label_space": {"describe": {"descriptors": "{in}/reversed-descriptors.json"}}},
        ["{in}/reversed-descriptors.json: the same classes as the dataset ProLabDemoDataset in another order"]),
    "descriptors naming a class in two cases": ({"label_space": {"describe": {"descriptors": "{in}/case-clash.json"}}},
                                                ["class names 'Car' and 'car ' differ only in case and spacing"]),
    "held-out classes naming one in two cases": ({"train": {"held_out": ["car", "Car"]}},
                                                 ["params.train.held_out", "class names 'car' and 'Car' differ only "
                                                  "in case"]),
    "no training process": ({"train": {"nproc_per_node": 0}},
                            ["params.train.nproc_per_node: Input should be greater than or equal to 1"]),
    "two nodes under torchrun": ({"train": {"nproc_per_node": 2, "nnodes": 2}},
                                 ["params.train.launcher", "torchrun starts processes on its own node only; nnodes=2 "
                                  "needs launcher 'slurm'"]),
    "held-out class the dataset lacks": ({"train": {"held_out": ["unicorn"]}},
                                         ["--held-out 'unicorn': not a class of the ProLabDemoDataset"]),
    "classes for the LLM to describe that the dataset lacks": (
        {"label_space": {"describe": {"dataset": "cityscapes", "descriptors": None}}},
        ["the cityscapes classes: label space has 19 classes but the dataset ProLabDemoDataset has 7"]),
}


def _fill(items: list[str], inputs: Path, env: dict[str, str]) -> list[str]:
    cityscapes = next(Path(env["PROLAB_ARTIFACTS"]).glob("cluster/*/"), Path("?"))
    values = {"in": str(inputs), "cityscapes": str(cityscapes), "cityscapes_file": str(shared_path(CITYSCAPES))}
    return [str(shared_path(item)) if item == CITYSCAPES else item.format(**values) for item in items]


def _check(env: dict[str, str], args: list[str], expected: list[str], as_a_process: bool = False) -> None:
    store = ArtifactStore(env["PROLAB_ARTIFACTS"])
    before = sorted(store.iter_artifacts())
    result = (prolab if as_a_process else prolab_in_process)(env, *args)
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for text in expected:
        assert text in result.stderr, f"{text!r} not in:\n{result.stderr[-2000:]}"
    assert sorted(store.iter_artifacts()) == before and store.verify() == {}, "nothing computed is lost"


@pytest.mark.parametrize("case", sorted(LABEL_SPACE))
def test_label_space_refuses(env: dict[str, str], inputs: Path, case: str) -> None:
    args, expected = LABEL_SPACE[case]
    args = ["--descriptors", CITYSCAPES, *args] if "--descriptors" not in args and "--dataset" not in args else args
    _check(env, ["label-space", *_fill(args, inputs, env)], _fill(expected, inputs, env))


# Refused by the stage in its flow run (which reads the checkpoint's records), where the run's
# log keeps its own traceback: run as a process, as a user runs it.
IN_A_FLOW_RUN = {"damaged checkpoint"}


assert IN_A_FLOW_RUN <= MODEL.keys()


@pytest.mark.parametrize("case", sorted(MODEL))
def test_train_and_evaluate_refuse(env: dict[str, str], inputs: Path, case: str) -> None:
    args, expected = MODEL[case]
    _check(env, [*_fill(args, inputs, env), "--config", "demo", "--cfg-options", "train_cfg.max_iters=1"],
           _fill(expected, inputs, env), as_a_process=case in IN_A_FLOW_RUN)


@pytest.mark.parametrize("case", sorted(CONFIG_FILES))
def test_config_files_are_refused_naming_the_file(env: dict[str, str], inputs: Path, case: str) -> None:
    (config,), expected = CONFIG_FILES[case]
    _check(env, ["train", "--label-space", str(inputs / "good"), *_fill(["--config", config], inputs, env)],
           _fill(expected, inputs, env))


# One refusal of each kind made before the flow run (tasks.preflight), by a ``prolab`` process as a
# user meets it: in seconds, and leaving no failed flow run on the server.
BEFORE_ANY_FLOW_RUN: dict[str, Case] = {
    "K beyond the descriptions of the file": (["label-space", "--descriptors", CITYSCAPES, "--k", "5000"],
                                              ["k=5000: must be between 1 and the number of descriptions (186"]),
    "embedder neither packaged nor cached": (["label-space", "--descriptors", CITYSCAPES, "--embedder",
                                              "no-such-org/no-such-model"],
                                             ["embedder 'no-such-org/no-such-model' could not be loaded"]),
    "LLM URL where nothing listens": (["label-space", "--dataset", "demo", "--llm", "http://127.0.0.1:9/v1",
                                       "--model", "some-model"],
                                      ["describe.llm (--llm) http://127.0.0.1:9/v1: the LLM server does not answer"]),
    "label space of the dataset's classes in another order": (["train", "--label-space", "{in}/reversed"],
                                                              ["the same classes as the dataset ProLabDemoDataset"]),
    "label space from another dataset": (["evaluate", "--label-space", "{cityscapes}", "--checkpoint",
                                          "{in}/damaged.pth"], ["label space has 19 classes but the dataset "
                                                                "ProLabDemoDataset has 7"]),
}


@pytest.mark.parametrize("case", sorted(BEFORE_ANY_FLOW_RUN))
def test_a_refused_command_creates_no_flow_run(env: dict[str, str], inputs: Path, tmp_path: Path, case: str) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterExpectedStartTime

    from tests.helpers.prefect_runs import api

    args, expected = BEFORE_ANY_FLOW_RUN[case]
    store = str(tmp_path / "store")  # a flow run of this command would carry it among its parameters
    started = datetime.now(timezone.utc)
    _check(env, [*_fill(args, inputs, env), "--artifacts", store], _fill(expected, inputs, env), as_a_process=True)
    since = FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=started))
    with api(env) as client:
        runs = client.read_flow_runs(flow_run_filter=since)
    assert [run.name for run in runs if run.parameters.get("artifacts") == store] == []


def _filled(value: Any, inputs: Path) -> Any:
    """A deployment case's parameters with ``{in}`` in its texts made the hostile inputs' directory."""
    if isinstance(value, dict):
        return {key: _filled(item, inputs) for key, item in value.items()}
    if isinstance(value, list):
        return [_filled(item, inputs) for item in value]
    return value.replace("{in}", str(inputs)) if isinstance(value, str) else value


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        both_dicts = isinstance(value, dict) and isinstance(base.get(key), dict) and value
        merged[key] = _merged(base[key], value) if both_dicts else value
    return merged


@pytest.mark.parametrize("case", sorted(DEPLOYMENT))
def test_deployment_parameters_fail_the_run_before_any_work(
    env: dict[str, str], inputs: Path, demo_root: Path, case: str,
) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    from flows.pipeline import end_to_end_flow
    from tests.helpers.prefect_runs import api

    override, expected = (_filled(item, inputs) for item in DEPLOYMENT[case])
    # Valid around the bad value, with descriptions the store has never seen: had any stage run,
    # describe (first, and sure to succeed) would have left an artifact.
    valid = {"label_space": {"describe": {"descriptors": str(inputs / "demo-descriptors.json")}, "cluster": {"k": 4}},
             "train": {"config": "demo", "data_root": str(demo_root), "cfg_options": tiny_options(2)}}
    store = ArtifactStore(env["PROLAB_ARTIFACTS"])
    before = sorted(store.iter_artifacts())
    settings = {PREFECT_API_URL: env["PREFECT_API_URL"], PREFECT_LOGGING_TO_API_ENABLED: False}
    with temporary_settings(settings):
        state = end_to_end_flow(params=_merged(valid, override), artifacts=str(store.root), return_state=True)
    assert state.is_failed(), state
    for text in expected:
        assert text in state.message, f"{text!r} not in:\n{state.message}"
    assert sorted(store.iter_artifacts()) == before and store.verify() == {}, "nothing computed, nothing lost"
    with api(env) as client:  # failed as the run's first step: no stage's task run began
        this_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        assert client.read_task_runs(flow_run_filter=this_run) == []


def test_a_stage_deployment_refuses_before_its_task_run(env: dict[str, str]) -> None:
    """The cluster deployment alone, on the embeddings the store holds: K beyond the file's
    descriptions fails its run before the cluster task starts."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    from flows.stages import cluster_flow
    from tests.helpers.prefect_runs import api

    params = {"label_space": {"describe": {"descriptors": str(shared_path(CITYSCAPES))}, "cluster": {"k": 187}}}
    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"], PREFECT_LOGGING_TO_API_ENABLED: False}):
        state = cluster_flow(params=params, artifacts=env["PROLAB_ARTIFACTS"], return_state=True)
    assert state.is_failed() and "k=187: must be between 1 and the number of descriptions (186 in" in state.message
    with api(env) as client:
        this_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        assert client.read_task_runs(flow_run_filter=this_run) == []


# prolab predict --classes: new class names a reader cannot tell apart, refused while planning.
PREDICT: dict[str, Case] = {
    "a list of new class names naming one in two cases": (["--classes", "{in}/new-names-clash.json"],
                                                          ["{in}/new-names-clash.json: class names 'Bicycle' and "
                                                           "'bicycle' differ only in case"]),
    "new classes' descriptions naming one in two cases and spacings": (["--classes", "{in}/case-clash.json"],
                                                                       ["{in}/case-clash.json: class names 'Car' and "
                                                                        "'car ' differ only in case and spacing"]),
    "--calibration without --add": (["--classes", "{in}/case-clash.json", "--calibration", "0.1"],
                                    ["--calibration 0.1: it lowers the trained classes' scores against new ones; "
                                     "give --classes NEW.json --add, or leave it at 0"]),
}


@pytest.mark.parametrize("case", sorted(PREDICT))
def test_predict_refuses(env: dict[str, str], inputs: Path, case: str) -> None:
    args, expected = PREDICT[case]
    _check(env, ["predict", str(inputs / "image.png"), "--checkpoint", str(inputs / "damaged.pth"),
                 *_fill(args, inputs, env)], _fill(expected, inputs, env))


def test_demo_refuses_classes_its_config_lacks_before_a_server_starts(env: dict[str, str]) -> None:
    """The end-to-end run would describe the 19 Cityscapes classes with the LLM, verify, embed and
    cluster them, and only then meet the demo config's 7: refused before the demo starts anything."""
    _check(env, ["demo", "--params", '{"label_space": {"describe": {"dataset": "cityscapes"}}}'],
           ["the cityscapes classes: label space has 19 classes but the dataset ProLabDemoDataset has 7"])


def test_demo_params_repeating_a_key_are_refused_naming_it(env: dict[str, str]) -> None:
    _check(env, ["demo", "--params", '{"train": {"config": "demo"}, "train": {"config": "camvid"}}'],
           ['--params: key "train" appears twice in one object'])
