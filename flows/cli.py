"""``prolab``: the command line over the same flows that the deployments run.

stdout carries the result (an artifact directory, last line; or a table); stderr carries
logs and progress. Expected failures (bad input, a damaged store) print one clear message
and exit non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from flows.options import add_model_options, describe_errors, model_from_args
from tasks.errors import UserError

if TYPE_CHECKING:
    from tasks.params import EndToEndParams, LabelSpaceParams, TrainParams
    from tasks.store import ArtifactStore

log = logging.getLogger("prolab")

EXIT_USAGE = 2
EXIT_FAILED = 1


def _add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifacts", metavar="DIR_OR_URL", default=None,
                        help="artifact store root: a directory, or an fsspec URL such as s3://bucket/prolab "
                             "cached locally under $PROLAB_CACHE (default: $PROLAB_ARTIFACTS or ./artifacts)")


def _add_stage_options(parser: argparse.ArgumentParser, stages: Sequence[str]) -> None:
    """One option group per stage, made from its parameters model (``tasks.params``)."""
    from tasks.registry import stage

    for name in stages:
        add_model_options(parser.add_argument_group(name), stage(name).params)


def _label_space_params(args: argparse.Namespace) -> LabelSpaceParams:
    from tasks.params import LabelSpaceParams
    from tasks.registry import LABEL_SPACE_STAGES, stage

    return LabelSpaceParams(**{name: model_from_args(stage(name).params, args) for name in LABEL_SPACE_STAGES})


def _store(args: argparse.Namespace) -> ArtifactStore:
    """The store ``--artifacts`` names; a root that cannot be opened fails here, before any flow run."""
    from tasks.store import ArtifactStore

    return ArtifactStore(args.artifacts)


def _connect(args: argparse.Namespace) -> None:
    """Pin this process to the Prefect API, starting the project's server when none is set.
    Commands call it after their input checks, so a refused command starts nothing, and before
    anything imports prefect, which reads the API address once."""
    from flows.server import use_local_server

    use_local_server()
    _quiet_library_logs(args.verbose)


def _reused(args: argparse.Namespace, found: Path, flow: str, parameters: dict) -> None:
    """An unchanged rerun's answer, printed at once; Prefect records the run in the background."""
    from flows import record

    print(found)
    sys.stdout.flush()
    pid, log_file = record.start(flow, {**parameters, "artifacts": args.artifacts})
    print(f"prolab: every stage is up to date; the Prefect run (all Cached) is recorded in the background "
          f"(pid {pid}, log {log_file})", file=sys.stderr)


def cmd_label_space(args: argparse.Namespace) -> None:
    from tasks.params import EndToEndParams
    from tasks.registry import LABEL_SPACE, LABEL_SPACE_STAGES, reuse

    params = _label_space_params(args)
    found = reuse(EndToEndParams(label_space=params), _store(args), LABEL_SPACE_STAGES)  # bad input is refused here
    if found is not None:
        return _reused(args, found[LABEL_SPACE], "label_space_flow", {"params": params.model_dump(mode="json")})
    from tasks.preflight import preflight

    preflight(EndToEndParams(label_space=params), LABEL_SPACE_STAGES, store=_store(args))  # refused here, before a flow run
    _connect(args)
    from flows.pipeline import label_space_flow

    print(label_space_flow(params, artifacts=args.artifacts))


def cmd_status(args: argparse.Namespace) -> None:
    from tasks.params import EndToEndParams
    from tasks.registry import LABEL_SPACE_STAGES, stage, status

    store = _store(args)
    params = EndToEndParams(label_space=_label_space_params(args))
    pipeline, rows = status(params, store, LABEL_SPACE_STAGES)
    print(f"pipeline: {pipeline}", file=sys.stderr)
    for row in rows:
        note = stage(row.name).status_note(store.path(row.name, row.plan.key)) if row.fresh else ""
        print(f"{row.name:10s} {row.plan.key}  {row.why}" + (f" ({note})" if note else ""))
    if not all(row.fresh for row in rows):
        print("some stages would run", file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> None:
    from tasks.params import EndToEndParams, TrainParams
    from tasks.registry import LABEL_SPACE, reuse

    label_space, params = _existing(args.label_space, "--label-space"), model_from_args(TrainParams, args)
    store = _store(args)
    found = reuse(EndToEndParams(train=params), store, ["train"], {LABEL_SPACE: label_space})
    if found is not None:
        return _reused(args, found["train"], "train_on_label_space_flow",
                       {"label_space": str(label_space), "params": params.model_dump(mode="json")})
    from tasks.preflight import preflight

    preflight(EndToEndParams(train=params), ["train"], {LABEL_SPACE: label_space})  # refused here, before a flow run
    _connect(args)
    from flows.pipeline import train_on_label_space_flow

    print(train_on_label_space_flow(str(label_space), params, artifacts=args.artifacts))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from tasks.params import EndToEndParams, EvaluateParams, TrainParams
    from tasks.registry import LABEL_SPACE, reuse

    label_space = _existing(args.label_space, "--label-space")
    checkpoint = _existing(args.checkpoint, "--checkpoint")
    train, params = model_from_args(TrainParams, args), model_from_args(EvaluateParams, args)
    from tasks.model.checkpoints import training_run

    given = {LABEL_SPACE: label_space, "train": training_run(checkpoint)}
    found = reuse(EndToEndParams(train=train, evaluate=params), _store(args), ["evaluate"], given)
    if found is not None:
        return _reused(args, found["evaluate"], "evaluate_checkpoint_flow",
                       {"label_space": str(label_space), "checkpoint": str(checkpoint),
                        "train": train.model_dump(mode="json"), "params": params.model_dump(mode="json")})
    from tasks.preflight import preflight

    preflight(EndToEndParams(train=train, evaluate=params), ["evaluate"], given)  # refused here, before a flow run
    _connect(args)
    from flows.pipeline import evaluate_checkpoint_flow

    print(evaluate_checkpoint_flow(str(label_space), str(checkpoint), train, params, artifacts=args.artifacts))


def _run_settings(args: argparse.Namespace, checkpoint: Path) -> TrainParams:
    """``--config`` and ``--cfg-options`` as given, else as the run recorded them (its own config)."""
    from tasks.model.runs import run_record
    from tasks.params import TrainParams

    given = {name: getattr(args, f"TrainParams.{name}") for name in ("config", "cfg_options")
             if hasattr(args, f"TrainParams.{name}")}
    if "config" not in given:
        record = run_record(checkpoint)
        if record.config is not None:
            given.setdefault("cfg_options", record.cfg_options)
            given["config"] = record.config
    return TrainParams(**given)


def cmd_predict(args: argparse.Namespace) -> None:
    from tasks.params import (
        DescribeParams,
        EndToEndParams,
        LabelSpaceParams,
        PredictParams,
        VerifyParams,
    )
    from tasks.registry import plan_stages

    checkpoint = _existing(args.checkpoint, "--checkpoint")
    words = LabelSpaceParams(describe=model_from_args(DescribeParams, args), verify=model_from_args(VerifyParams, args))
    params = EndToEndParams(label_space=words, train=_run_settings(args, checkpoint),
                            predict=model_from_args(PredictParams, args, images=args.images))
    from tasks.model.checkpoints import training_run

    plan_stages(params, ["predict"], {"train": training_run(checkpoint)})  # refused before a flow run
    _store(args)
    _connect(args)
    from flows.pipeline import predict_checkpoint_flow

    out = Path(predict_checkpoint_flow(str(checkpoint), params, artifacts=args.artifacts))
    summary = json.loads((out / "predictions.json").read_text())
    for skipped in summary["skipped"]:
        print(f"skipped {skipped['file']}: {skipped['reason']}", file=sys.stderr)
    for query in summary["queries"]:
        print(f"query {query['text']!r}: " + "; ".join(f"p{p['id']:02d} {p['similarity']:.2f} {p['name']!r}"
                                                   for p in query["properties"]))
    if args.out is not None:
        shutil.copytree(out, args.out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("manifest.json"))
        out = args.out.resolve()
    print(out)


def _existing(path: Path, option: str) -> Path:
    if not path.exists():
        raise UserError(f"{option} {path}: no such file or directory")
    return path.resolve()


def cmd_verify(args: argparse.Namespace) -> None:
    store = _store(args)
    store.sweep()  # temporaries of killed writers; each one removed is logged
    damaged = store.verify()
    for directory, issues in damaged.items():
        print(f"DAMAGED {directory}")
        for issue in issues:
            print(f"  {issue}")
    where = store.location if store.remote is None else f"{store.location} and its local cache {store.root}"
    if damaged:
        raise UserError(f"{len(damaged)} damaged artifact(s) under {where}; the next run recomputes them")
    print(f"all artifacts under {where} match their manifests", file=sys.stderr)


def cmd_gc(args: argparse.Namespace) -> None:
    from tasks.gc import Collector, human_size

    store = _store(args)
    collector = Collector(store, args.keep, args.keep_days)
    going = kept = 0
    for entry in collector.entries():
        where = entry.path if isinstance(entry.path, str) else entry.path.relative_to(store.root)
        if entry.remove and args.yes:
            went = collector.remove(entry)
            action, why = ("removed", entry.why) if went else ("kept", "in use since it was listed")
        else:
            went, action, why = entry.remove, "remove" if entry.remove else "keep", entry.why
        going += entry.size if went else 0
        kept += 0 if went else entry.size
        print(f"{action:8s} {human_size(entry.size):>10s}  {where}  {entry.kind}: {why}")
    if args.yes:
        print(f"freed {human_size(going)} under {store.location}; kept {human_size(kept)}")
    else:
        print(f"would free {human_size(going)} under {store.location}, keeping {human_size(kept)}: "
              f"nothing removed yet (prolab gc --yes removes it)")


def cmd_llm_serve(args: argparse.Namespace) -> None:
    from tasks.label_space.llm_server import serve

    status = serve(engine=args.engine, model=args.model, host="127.0.0.1", port=args.port)
    if status:
        raise UserError(f"the {args.engine} server exited with status {status}")


def cmd_server(args: argparse.Namespace) -> None:
    from flows import server
    from flows.prefect_profile import user_profiles_file

    local = server.local_server()
    if args.action == "start":
        server.start(local, profiles=user_profiles_file(os.environ))
        print(local.ui_url)
    elif args.action == "stop":
        from flows import worker

        logging.getLogger("httpx").setLevel(logging.WARNING)
        worker.stop(worker.local_worker())  # first: it marks its stopped runs through the server
        stopped = server.stop(local)
        print("stopped" if stopped else "not running (nothing started by this checkout)", file=sys.stderr)
    else:
        print(f"{local.ui_url} {'up' if server.is_healthy(local) else 'down'}")


def _json_params(text: str | None) -> dict | None:
    from tasks.files import loads_json

    try:
        return loads_json(text, "--params") if text else None
    except json.JSONDecodeError as error:
        raise UserError(f"--params: not JSON ({error})") from None


def cmd_demo(args: argparse.Namespace) -> None:
    from prolab_models.configs import one_hot_twin
    from tasks.params import EndToEndParams

    params = _json_params(args.params) or {}  # refused before a server starts, naming the field
    try:
        pipeline = EndToEndParams(**params)
    except ValidationError as error:
        raise UserError("; ".join(f"--params: {'.'.join(map(str, item['loc']))}: {item['msg']}"
                                  for item in error.errors())) from None
    twin = one_hot_twin(pipeline.train.config)
    if args.baseline and twin is None:
        raise UserError(f"--baseline: config {pipeline.train.config!r} has no one-hot twin (a short name "
                        f"NAME with a NAME_ce beside it)")
    from tasks.preflight import preflight
    from tasks.registry import end_to_end

    preflight(pipeline, end_to_end(pipeline))  # what the run would refuse in its first seconds, refused here
    _connect(args)
    from flows import deploy

    flow_run = deploy.demo({"params": params} if params else None)
    if args.baseline and flow_run.state.is_completed():
        log.info("the one-hot twin %s, at the same budget, for comparison", twin)
        baseline = {**params, "train": {**params.get("train", {}), "config": twin}}
        deploy.wait(deploy.start_run(deploy.END_TO_END, {"params": baseline}).id)
    url = deploy.flow_run_url(flow_run.id)
    if flow_run.state.is_completed():
        from tasks import PROJECT_ROOT
        from tasks.store import ArtifactStore

        # the deployments' runs work in the checkout: a relative store root is the checkout's
        store = ArtifactStore(os.environ.get("PROLAB_ARTIFACTS") or PROJECT_ROOT / "artifacts")
        print("\n".join(demo_summary(pipeline, store, twin)))
    print(f"Prefect UI: {deploy.ui_url()}  (stop it with `prolab server stop`)")
    print(url)
    if not flow_run.state.is_completed():
        raise UserError(f"the end-to-end run ended {flow_run.state.name}: {flow_run.state.message}")


def demo_summary(params: EndToEndParams, store: ArtifactStore, twin: str | None) -> list[str]:
    """The run's IoU per class beside its one-hot twin's at the same budget (when the store holds
    an evaluation of it on the same data), then the directories of what the run made."""
    import json

    from tasks.model.evaluate import METRICS_FILE, twin_evaluation
    from tasks.registry import LABEL_SPACE, end_to_end, plan_stages

    plans = plan_stages(params, end_to_end(params))  # predict only when given images
    evaluation = store.path("evaluate", plans["evaluate"].key)
    ours = json.loads((evaluation / METRICS_FILE).read_text())
    found = twin_evaluation(store, plans["evaluate"], twin) if twin else None
    theirs = json.loads((found / METRICS_FILE).read_text()) if found else None

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    header = f"{'IoU (%)':14s} {'ProLab':>8s}" + (f" {'one-hot CE':>11s}" if theirs else "")
    lines = [header]
    for name, iou in ours["per_class_iou"].items():
        lines.append(f"{name:14s} {cell(iou):>8s}" + (f" {cell(theirs['per_class_iou'].get(name)):>11s}"
                                                      if theirs else ""))
    lines.append(f"{'mIoU':14s} {cell(ours['mIoU']):>8s}" + (f" {cell(theirs['mIoU']):>11s}" if theirs else ""))
    if theirs is None and twin is not None:
        lines.append(f"(one-hot CE: no evaluation of {twin} on this data in the store; `prolab demo --baseline` "
                     f"trains it at the same budget)")
    lines += [f"label space   {store.path(LABEL_SPACE, plans[LABEL_SPACE].key)}",
              f"training run  {store.path('train', plans['train'].key)}",
              f"evaluation    {evaluation}"]
    return lines


def cmd_deploy(args: argparse.Namespace) -> None:
    from flows import deploy

    print("\n".join(deploy.deploy_all()))


def cmd_worker(args: argparse.Namespace) -> None:
    from flows import worker

    logging.getLogger("httpx").setLevel(logging.WARNING)
    local = worker.local_worker()
    if args.action == "start":
        from flows.server import use_local_server

        use_local_server()
        worker.start(local)
        print(f"worker {local.name} polls {local.pool}; log {local.log_file}", file=sys.stderr)
    elif args.action == "stop":
        stopped = worker.stop(local)
        print("stopped" if stopped else "not running", file=sys.stderr)
    else:
        print(f"{local.name} {'up' if worker.is_running(local) else 'down'}")


def _days(text: str) -> float:
    days = float(text)
    if not days >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r}: not a number of days (0 or more)")
    return days


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prolab", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    from tasks.params import PROCESS_LAYOUT
    from tasks.registry import LABEL_SPACE_STAGES, stage

    label_space = commands.add_parser("label-space", help=f"{' -> '.join(LABEL_SPACE_STAGES)}; "
                                                          "prints the label space dir")
    _add_stage_options(label_space, LABEL_SPACE_STAGES)
    _add_store(label_space)
    label_space.set_defaults(run=cmd_label_space)

    status = commands.add_parser("status", help="per stage: up to date, or would run and why")
    _add_stage_options(status, LABEL_SPACE_STAGES)
    _add_store(status)
    status.set_defaults(run=cmd_status)

    train = commands.add_parser("train", help="train a model on a label space; prints the run's directory")
    train.add_argument("--label-space", type=Path, required=True, help="label space directory")
    _add_stage_options(train, ["train"])
    _add_store(train)
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("evaluate", help="score a run; prints the directory holding metrics.json")
    evaluate.add_argument("--label-space", type=Path, required=True, help="label space directory")
    evaluate.add_argument("--checkpoint", type=Path, required=True, help="a training run directory or a .pth file")
    add_model_options(evaluate.add_argument_group("train"), stage("train").params,
                      exclude=(*PROCESS_LAYOUT, "held_out_images"))  # the run's record says which it trained with
    _add_stage_options(evaluate, ["evaluate"])
    _add_store(evaluate)
    evaluate.set_defaults(run=cmd_evaluate)

    predict = commands.add_parser("predict", help="label maps, overlays and property maps of a run on your images; "
                                                  "new classes from words, text queries; prints the output dir")
    predict.add_argument("images", type=Path, nargs="+", metavar="IMAGE_OR_DIR", help="image files or directories")
    predict.add_argument("--checkpoint", type=Path, required=True, help="a training run directory or a .pth file")
    predict.add_argument("--out", type=Path, default=None,
                         help="also copy the outputs to this directory (default: print the artifact directory)")
    add_model_options(predict.add_argument_group("predict"), stage("predict").params, exclude=("images",))
    add_model_options(predict.add_argument_group("model", "a --config given takes none of the run's --cfg-options"),
                      stage("train").params, exclude=("data_root", "held_out", "held_out_images", *PROCESS_LAYOUT),
                      default="the run's own")
    add_model_options(predict.add_argument_group("describing new class names (--classes with a list)"),
                      stage("describe").params, exclude=("dataset", "descriptors"))
    add_model_options(predict.add_argument_group("verifying new classes' descriptions"), stage("verify").params)
    _add_store(predict)
    predict.set_defaults(run=cmd_predict)

    verify = commands.add_parser("verify", help="check every artifact against its manifest")
    _add_store(verify)
    verify.set_defaults(run=cmd_verify)

    from tasks.gc import DEFAULT_KEEP_DAYS

    gc = commands.add_parser("gc", help="list what no kept run needs (sizes, and why each item goes or stays); "
                                        "remove it with --yes")
    gc.add_argument("--yes", action="store_true", help="remove what is listed as going (default: only list it)")
    gc.add_argument("--keep", type=Path, nargs="+", default=[], metavar="DIR",
                    help="also keep these artifacts (a label space, run or evaluation directory) and their inputs")
    gc.add_argument("--keep-days", type=_days, default=DEFAULT_KEEP_DAYS, metavar="N",
                    help=f"keep what a run created or used in the last N days, and work dirs and quarantined "
                         f"copies younger than that (default: {DEFAULT_KEEP_DAYS:g})")
    _add_store(gc)
    gc.set_defaults(run=cmd_gc)

    from tasks.label_space.llm.engines import ENGINES, LOCAL_ENGINE

    llm = commands.add_parser("llm", help="the local LLM server").add_subparsers(dest="llm_command", required=True)
    serve = llm.add_parser("serve", help="serve an OpenAI-compatible LLM on 127.0.0.1 (foreground)")
    serve.add_argument("--engine", choices=list(ENGINES), default=LOCAL_ENGINE)
    serve.add_argument("--model", help="GGUF path (llama-cpp; default: the packaged Gemma-3-270M) "
                                       "or a model name (vllm, e.g. meta-llama/Llama-2-7b-chat-hf)")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(run=cmd_llm_serve)

    prefect_server = commands.add_parser("server", help="the project's local Prefect server (127.0.0.1, SQLite)")
    prefect_server.add_argument("action", choices=["start", "stop", "status"])
    prefect_server.set_defaults(run=cmd_server)

    demo = commands.add_parser("demo", help="server + worker + deployments, then the end-to-end run; "
                                            "prints the UI and the run's address")
    demo.add_argument("--baseline", action="store_true",
                      help="also train and evaluate the config's one-hot twin (demo_ce for demo) at the same "
                           "budget, and print its IoU beside ProLab's")
    demo.add_argument("--params", metavar="JSON",
                      help="EndToEndParams (tasks/params.py) as JSON, e.g. "
                           "'{\"train\": {\"cfg_options\": {\"train_cfg.max_iters\": 20}}}'; default: the demo's")
    demo.set_defaults(run=cmd_demo)

    deploy = commands.add_parser("deploy", help="apply prefect.yaml's deployments (prefect deploy --all)")
    deploy.set_defaults(run=cmd_deploy)

    prefect_worker = commands.add_parser("worker", help="the local process worker of the prolab-local pool")
    prefect_worker.add_argument("action", choices=["start", "stop", "status"])
    prefect_worker.set_defaults(run=cmd_worker)
    return parser


# Commands that talk to Prefect from their first step; label-space, train, evaluate, predict and
# demo connect themselves once their input is checked (``_connect``).
SERVER_COMMANDS = {"deploy"}


class _NoTraceback(logging.Filter):
    """Prefect logs a failed task's traceback; a CLI user gets the one-line message instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True


def _quiet_library_logs(verbose: bool) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if verbose:
        return
    import prefect  # noqa: F401  (configures its handlers)

    for name in ("", "prefect", "prefect.task_runs", "prefect.flow_runs"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_NoTraceback())


def _is_expected(error: BaseException) -> bool:
    """Bad input, a damaged store or an unreachable service, not a bug: every such error of the
    project derives from ``ProLabError`` (a missing path the user named too: ``MissingInputError``);
    any other error, a ``FileNotFoundError`` from a bug included, keeps its traceback."""
    from prolab_models.errors import ProLabError

    return isinstance(error, ProLabError)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    run: Callable[[argparse.Namespace], None] = args.run
    try:
        if args.command in SERVER_COMMANDS:
            _connect(args)
        run(args)
    except ValidationError as error:
        from tasks.registry import STAGES

        print(f"prolab: error: {describe_errors(error, [stage.params for stage in STAGES])}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:
        if not _is_expected(error):
            raise
        print(f"prolab: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("prolab: interrupted; finished artifacts are kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
