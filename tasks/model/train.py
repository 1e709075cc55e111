"""The train stage: label space + dataset + model config -> an mmengine work dir, resumable.

``train`` is a plain function over mmengine's Runner: it resolves the config, points every
``label_space`` and ``data_root`` field of it at the given paths, checks that the label space
fits the dataset, and runs; a work dir that already holds checkpoints is resumed, not
restarted. Logs and progress go to stderr. In the store, a run's key hashes the resolved config
(with its overrides), the label space's key and the dataset's fingerprint; training runs in a
stable work dir (``<root>/train/.work-<key>``) so that a killed run resumes from its last
checkpoint, one process at a time per key, and only a finished run becomes the artifact.

Distributed training, like mmseg's ``tools/train.py``:

    python -m tasks.model.train --config camvid --label-space LS --work-dir WD
    torchrun --nproc_per_node 2 -m tasks.model.train --config demo ... --launcher pytorch

Every process runs the same call; mmengine's launcher sets up the process group (backend from
the config's ``env_cfg.dist_cfg``: gloo for the CPU configs, nccl for the GPU ones). Rank 0
prints the final checkpoint's path on stdout. The train stage runs it this way when its
parameters ask for more than one process (``tasks.model.launch``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from mmengine.config import Config, DictAction
from mmengine.dist import is_main_process
from mmengine.runner import Runner

from prolab_models.errors import LabelSpaceMismatchError, ProLabInputError
from prolab_models.label_space import LabelSpace, load_label_space
from tasks.files import MANIFEST
from tasks.label_space.transfer import EmbedFn
from tasks.model.checkpoints import last_checkpoint
from tasks.model.runs import (
    RUN_RECORD,
    build_config,
    check_inputs,
    config_dataset_classes,
    drop_images_holding,
    hold_out_classes,
    logs_to_stderr,
    model_identity,
    resolve_data_root,
    use_label_space,
)
from tasks.params import PROCESS_LAYOUT, EndToEndParams
from tasks.reports import Report, image, manifest_params, markdown_table, read_json
from tasks.stage import StagePlan, declared_params, materialize
from tasks.store import ArtifactStore

VERSION = "3"  # 3: the key holds the declared parameters (READS), by name
# What train's key reads. How the processes are laid out (per node, nodes) and started (torchrun,
# srun) changes nothing the run computes; how many there are does (the global batch), so the
# world size is added when it is more than one. Without held-out classes there is no image to
# drop, and the image rule is not read.
READS = ("train",)
UNKEYED = tuple(f"train.{name}" for name in PROCESS_LAYOUT)
UNKEYED_WITHOUT_HELD_OUT = (*UNKEYED, "train.held_out_images")
HELD_OUT_LABEL_SPACE = "label_space"  # a held-out run's own label space, inside its work dir
MAX_CONFIG_CHARS = 20_000


def _record_run(work_dir: Path, space: LabelSpace, config: str | Path, cfg_options: dict | None,
                held_out: Sequence[str], held_out_images: dict[str, Any] | None = None) -> None:
    """Remember which label space a work dir was trained with (a path relative to the work dir
    when it lives inside it, as a held-out run's own does), what it held out and its config
    (``held_out_images``: the rule for the images holding them, and how many were dropped);
    refuse to resume with another label space."""
    record = work_dir / RUN_RECORD
    if record.is_file():
        previous = json.loads(record.read_text())
        if previous["key"] != space.key:
            raise LabelSpaceMismatchError(
                f"{work_dir}: trained with label space {previous['key']!r} ({previous['path']}), "
                f"cannot resume with {space.key!r} ({space.path}); use a new work dir")
        return
    if is_main_process():
        work_dir.mkdir(parents=True, exist_ok=True)
        inside = space.path.resolve().is_relative_to(work_dir.resolve())
        record.write_text(json.dumps({
            "key": space.key,
            "path": str(space.path.resolve().relative_to(work_dir.resolve()) if inside else space.path),
            "classes": space.classes,
            "num_properties": space.num_properties,
            "held_out": list(held_out),
            **({"held_out_images": held_out_images} if held_out_images is not None else {}),
            "config": str(config),
            "cfg_options": cfg_options or {},
        }, indent=2, default=str))


def held_out_label_space(space: LabelSpace, held_out: Sequence[str], work_dir: Path, embed: EmbedFn) -> LabelSpace:
    """The label space a held-out run trains on, in its work dir (``HELD_OUT_LABEL_SPACE``):
    derived from ``space`` without the held-out classes (``tasks.label_space.transfer.hold_out``),
    or found there when resuming. Written aside and renamed into place: every process of a
    distributed run derives the same one, and the first to finish places it."""
    from tasks.label_space.transfer import hold_out

    target = work_dir / HELD_OUT_LABEL_SPACE
    if not target.is_dir():
        work_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".label-space-", dir=work_dir))
        try:
            hold_out(space, held_out, scratch, embed)
            with contextlib.suppress(OSError):  # another process placed it first
                scratch.rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return load_label_space(target)


def _prepare_cpu_distributed(cfg: Config) -> None:
    """mmengine's ``pytorch`` launcher assumes one CUDA device per process (it pins one and
    gives DDP ``device_ids``), which fails on a CPU machine. There the process group is created
    here (from torchrun's environment, with the config's backend: gloo for the CPU configs),
    which mmengine then uses as it is, and DDP gets no device ids."""
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        return
    if not dist.is_initialized():
        # gloo reports its connections on the C++ stdout: keep stdout for the result
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
        try:
            dist.init_process_group(backend=cfg.env_cfg.get("dist_cfg", {}).get("backend", "gloo"))
        finally:
            os.dup2(saved, 1)
            os.close(saved)
    if cfg.get("model_wrapper_cfg") is None:
        cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False)


def train(
    config: str | Path,
    label_space: Path,
    work_dir: Path,
    data_root: Path | None = None,
    cfg_options: dict | None = None,
    launcher: str = "none",
    held_out: Sequence[str] = (),
    embed: EmbedFn | None = None,
    held_out_images: str = "drop",
) -> Path:
    """Train (or resume) a model; return its final checkpoint.

    ``config``: a short name (``demo``, ``camvid``, ``ade20k``...) or a config file;
    ``cfg_options``: mmengine overrides, e.g. ``{"train_cfg.max_iters": 400}``;
    ``launcher``: ``none``, or ``pytorch``/``slurm``/``mpi`` for distributed runs;
    ``held_out``: classes trained on the label space without them (derived in the work dir;
    ``embed``: the texts' embedding function, by default the label space's embedder through the
    default store's vector cache); ``held_out_images``: ``drop`` leaves the training images that
    hold them out (ZS3Net's protocol), ``ignore`` trains on them with those pixels ignored.
    """
    work_dir = Path(work_dir)
    space = load_label_space(label_space)
    cfg = build_config(config, space.path, work_dir, data_root, cfg_options)
    if held_out_images not in ("drop", "ignore"):
        raise ProLabInputError(f"--held-out-images {held_out_images!r}: expected 'drop' or 'ignore'")
    images = None
    if held_out:
        from tasks.label_space.embed import text_embedder

        classes = config_dataset_classes(cfg.train_dataloader.dataset)
        hold_out_classes(cfg, list(held_out), config)  # unknown names are refused before any work
        space = held_out_label_space(space, held_out, work_dir, embed or text_embedder(space.embedder))
        use_label_space(cfg, space.path, space.num_classes)
    check_inputs(cfg, space, "train_dataloader")
    if held_out:
        images = {"rule": held_out_images}
        if held_out_images == "drop":
            images["dropped"], images["of"] = drop_images_holding(cfg, held_out, classes, config)
    cfg.launcher = launcher
    if launcher == "pytorch":
        _prepare_cpu_distributed(cfg)
    cfg.resume = any(work_dir.glob("iter_*.pth"))
    _record_run(work_dir, space, config, cfg_options, held_out, images)
    with logs_to_stderr():
        runner = Runner.from_cfg(cfg)
        runner.train()
    return last_checkpoint(work_dir)


def plan(params: EndToEndParams, inputs: Mapping[str, str]) -> StagePlan:
    """``inputs["label_space"]``: the label space's reference (see ``tasks.stage.input_ref``).
    The key holds what ``READS`` declares (held-out classes also change the resolved config it
    hashes), and the world size when it is more than 1: the global batch is the per-process
    batch times it."""
    identity = model_identity(params.train)
    unkeyed = UNKEYED if params.train.held_out else UNKEYED_WITHOUT_HELD_OUT
    settings = {**declared_params(params, READS, unkeyed), "config_sha256": identity.config_sha256}
    if params.train.world_size > 1:
        settings["world_size"] = params.train.world_size
    return StagePlan("train", VERSION, settings, {"label_space": inputs["label_space"], "dataset": identity.dataset},
                     identity.sources)


def run(plan: StagePlan, params: EndToEndParams, inputs: Mapping[str, Path], store: ArtifactStore) -> Path:
    """The training run's artifact: config, logs, scalars and the final checkpoint. One process
    trains here; more are started by torchrun or srun (``tasks.model.launch``) in the same work
    dir, and leave the same files.

    Two runs of one key would share the resumable work dir, and the first to finish moves its
    files away under the other: the second waits for the key's lock instead, then finds the artifact.
    """
    settings = params.train

    def build(out: Path) -> None:
        work_dir = store.work_dir(plan.stage, plan.key)
        embed = None
        if settings.held_out:
            from tasks.label_space.embed import text_embedder

            embed = text_embedder(load_label_space(inputs["label_space"]).embedder, store.embedding_cache)
        if settings.world_size == 1:
            checkpoint = train(settings.config, inputs["label_space"], work_dir, resolve_data_root(settings),
                               settings.cfg_options, held_out=settings.held_out, embed=embed,
                               held_out_images=settings.held_out_images)
        else:
            from tasks.model.launch import train_processes

            if embed is not None:  # derived here, through the store's vector cache; every process finds it
                held_out_label_space(load_label_space(inputs["label_space"]), settings.held_out, work_dir, embed)
            checkpoint = train_processes(settings, inputs["label_space"], work_dir, resolve_data_root(settings))
        for path in work_dir.iterdir():
            if path.suffix == ".pth" and path != checkpoint or path.name == "last_checkpoint":
                continue  # keep the final checkpoint only; the record holds an absolute path
            shutil.move(str(path), out / path.name)
        shutil.rmtree(work_dir)

    with store.lock(plan.stage, plan.key):
        return materialize(store, plan, build)


def run_name(params: EndToEndParams) -> str:
    return f"train {params.train.config}"

def _scalar_files(directory: Path) -> list[Path]:
    """mmengine's ``<timestamp>/vis_data/scalars.json``, oldest first (a resumed run adds one)."""
    return sorted(directory.glob("*/vis_data/scalars.json"), key=lambda p: p.parts[-3])


def _config_text(directory: Path) -> str | None:
    """The config mmengine dumped for the run: ``<work_dir>/<name>.py``, else the latest
    ``<timestamp>/vis_data/config.py``."""
    candidates = sorted(directory.glob("*.py")) + sorted(directory.glob("*/vis_data/config.py"), reverse=True)
    return candidates[0].read_text() if candidates else None


def _training_facts(training: list[dict[str, Any]]) -> dict[str, str]:
    """Iterations, mean seconds per iteration and the last loss of mmengine's training records."""
    facts = {"iterations": str(int(max(r.get("step", r.get("iter", 0)) for r in training)))}
    times = [float(r["time"]) for r in training if "time" in r]
    if times:
        facts["seconds per iteration"] = f"{np.mean(times):.3f}"
    losses = [float(r["loss"]) for r in training if "loss" in r]
    if losses:
        facts["last loss"] = f"{losses[-1]:.4f}"
    return facts


def reports(directory: Path) -> list[Report]:
    """Loss and learning-rate curves, time per iteration, and the run's full config."""
    from tasks.visualization import read_scalars, save_curves

    records = [record for path in _scalar_files(directory) for record in read_scalars(path)]
    training = [r for r in records if "lr" in r or any("loss" in key for key in r)]
    found = []
    if training:
        with tempfile.TemporaryDirectory(prefix="prolab-report-") as scratch:
            picture = save_curves(records, Path(scratch) / "curves.png")
            found.append(image("train-curves", picture, "losses, learning rate and validation metrics"))
    params = manifest_params(directory)
    overrides = params.get("train.cfg_options")
    facts: dict[str, Any] = {"config": params.get("train.config"),
                             "overrides": f"`{json.dumps(overrides)}`" if overrides else "none",
                             "processes": params.get("world_size", 1)}
    facts.update(_training_facts(training) if training else {})
    manifest = read_json(directory / MANIFEST) or {}
    if "seconds" in manifest:
        facts["stage time (s)"] = manifest["seconds"]
    facts["checkpoints"] = ", ".join(sorted(p.name for p in directory.glob("*.pth"))) or "none"
    text = "# Training run\n\n" + markdown_table(facts)
    config = _config_text(directory)
    if config is not None:
        clipped = config[:MAX_CONFIG_CHARS] + ("\n# ... (clipped)" if len(config) > MAX_CONFIG_CHARS else "")
        text += f"\n\n## Config\n\n```python\n{clipped}\n```\n"
    summary = (f"{facts['config']}: {facts.get('iterations', 'no')} iterations, "
               f"last loss {facts.get('last loss', 'n/a')}")
    found.append(Report("train", "markdown", text, summary))
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasks.model.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a short name (demo, camvid, ade20k, ...) or a config file")
    parser.add_argument("--label-space", type=Path, required=True, help="the label space directory")
    parser.add_argument("--work-dir", type=Path, required=True, help="checkpoints and logs; resumed if it holds any")
    parser.add_argument("--data-root", type=Path, default=None, help="overrides the config's data_root")
    overrides = parser.add_mutually_exclusive_group()
    overrides.add_argument("--cfg-options", nargs="+", action=DictAction, default=None,
                           help="config overrides, key=value (e.g. train_cfg.max_iters=400)")
    overrides.add_argument("--cfg-options-json", dest="cfg_options", type=json.loads, metavar="JSON",
                           help="config overrides as one JSON object (as TrainParams.cfg_options holds them)")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--held-out", type=lambda text: [c.strip() for c in text.split(",") if c.strip()],
                        default=[], metavar="CLASS[,CLASS...]", help="classes held out of training")
    parser.add_argument("--held-out-images", choices=["drop", "ignore"], default="drop",
                        help="drop the training images holding a held-out class, or ignore its pixels")
    args = parser.parse_args(argv)
    checkpoint = train(args.config, args.label_space, args.work_dir, args.data_root, args.cfg_options, args.launcher,
                       args.held_out, held_out_images=args.held_out_images)
    if is_main_process():
        print(checkpoint)


if __name__ == "__main__":
    main()
