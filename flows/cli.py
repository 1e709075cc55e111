"""``prolab``: the command line over the same flows that the deployments run.

stdout carries the result (an artifact directory, last line; or a table); stderr carries
logs and progress. Expected failures (bad input, a damaged store) print one clear message
and exit non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

if TYPE_CHECKING:
    from tasks.store import ArtifactStore

log = logging.getLogger("prolab")

EXIT_USAGE = 2
EXIT_FAILED = 1


class UserError(Exception):
    """An error the user can fix; its message is all they need to see."""


def _add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifacts", metavar="DIR_OR_URL", default=None,
                        help="artifact store root: a directory, or an fsspec URL such as s3://bucket/prolab "
                             "cached locally under $PROLAB_CACHE (default: $PROLAB_ARTIFACTS or ./artifacts)")


def _add_label_space_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("describe")
    source.add_argument("--dataset", help="a known dataset: its classes, in label order (default: demo)")
    source.add_argument("--descriptors", type=Path, metavar="FILE",
                        help="import a {class: [description, ...]} JSON file instead of asking an LLM")
    source.add_argument("--llm", default="local",
                        help="'local' (embedded model on 127.0.0.1), 'openai', or an OpenAI-compatible base URL")
    source.add_argument("--model", help="model name at the LLM endpoint")
    source.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    source.add_argument("--concurrency", type=int, default=4, help="LLM calls in flight at once")
    parser.add_argument("--embedder", default="all-MiniLM-L6-v2", help="sentence-transformers hub name or path")
    parser.add_argument("--k", type=int, default=16, help="number of properties")
    parser.add_argument("--seed", type=int, default=0, help="k-means random_state")
    _add_store(parser)


def _label_space_params(args: argparse.Namespace):
    from tasks.params import ClusterParams, DescribeParams, EmbedParams, LabelSpaceParams

    dataset = args.dataset if args.dataset or args.descriptors else "demo"
    return LabelSpaceParams(
        describe=DescribeParams(dataset=dataset, descriptors=args.descriptors, llm=args.llm, model=args.model,
                                api_key_env=args.api_key_env, concurrency=args.concurrency),
        embed=EmbedParams(embedder=args.embedder),
        cluster=ClusterParams(k=args.k, seed=args.seed),
    )


def _store(args: argparse.Namespace) -> ArtifactStore:
    """The store ``--artifacts`` names; a root that cannot be opened fails here, before any flow run."""
    from tasks.store import ArtifactStore

    return ArtifactStore(args.artifacts)


def _open_and_connect(args: argparse.Namespace) -> None:
    """The last checks before a command's flow runs: the store opens (a bad root fails here),
    then the process connects to Prefect."""
    _store(args)
    _connect(args)


def _connect(args: argparse.Namespace) -> None:
    """Pin this process to the Prefect API, starting the project's server when none is set.
    Commands call it after their input checks, so a refused command starts nothing, and before
    anything imports prefect, which reads the API address once."""
    from flows.server import use_local_server

    use_local_server()
    _quiet_library_logs(args.verbose)


def cmd_label_space(args: argparse.Namespace) -> None:
    from tasks.plans import plan_label_space

    params = _label_space_params(args)
    plan_label_space(params)  # bad input is reported before a flow run starts
    _open_and_connect(args)
    from flows.label_space import label_space_flow

    print(label_space_flow(params, artifacts=args.artifacts))


def cmd_status(args: argparse.Namespace) -> None:
    from tasks.plans import plan_label_space
    from tasks.stage import explain

    store = _store(args)
    stale = False
    for stage, plan in plan_label_space(_label_space_params(args)).items():
        fresh, why = explain(store, plan)
        print(f"{stage:10s} {plan.key}  {why}")
        stale |= not fresh
    if stale:
        print("some stages would run", file=sys.stderr)


def _train_params(args: argparse.Namespace):
    from tasks.params import TrainParams

    return TrainParams(config=args.config, data_root=args.data_root, cfg_options=args.cfg_options or {})


def cmd_train(args: argparse.Namespace) -> None:
    from tasks.label_space import label_space_ref
    from tasks.model_stages import plan_train

    label_space, params = _existing(args.label_space, "--label-space"), _train_params(args)
    plan_train(label_space_ref(label_space), params)  # bad input is reported before a flow run starts
    _open_and_connect(args)
    from flows.end_to_end import train_on_label_space_flow

    print(train_on_label_space_flow(str(label_space), params, artifacts=args.artifacts))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from tasks.label_space import label_space_ref
    from tasks.model_stages import checkpoint_ref, plan_evaluate
    from tasks.params import EvaluateParams

    label_space, checkpoint = _existing(args.label_space, "--label-space"), _existing(args.checkpoint, "--checkpoint")
    train, params = _train_params(args), EvaluateParams(split=args.split)
    # bad input is reported before a flow run starts
    plan_evaluate(checkpoint_ref(checkpoint), label_space_ref(label_space), train, params)
    _open_and_connect(args)
    from flows.end_to_end import evaluate_checkpoint_flow

    print(evaluate_checkpoint_flow(str(label_space), str(checkpoint), train, params, artifacts=args.artifacts))


def _existing(path: Path, option: str) -> Path:
    if not path.exists():
        raise UserError(f"{option} {path}: no such file or directory")
    return path.resolve()


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    from mmengine.config import DictAction

    parser.add_argument("--config", default="demo", help="config name (demo, camvid, ade20k, ...) or file")
    parser.add_argument("--data-root", type=Path, help="dataset root (default: the config's; demo: generated)")
    parser.add_argument("--label-space", type=Path, required=True, help="label space directory")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                        help="override config settings, e.g. train_cfg.max_iters=400")
    _add_store(parser)


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


def cmd_llm_serve(args: argparse.Namespace) -> None:
    from tasks.llm_server import serve

    status = serve(engine=args.engine, model=args.model, host="127.0.0.1", port=args.port)
    if status:
        raise UserError(f"the {args.engine} server exited with status {status}")


def cmd_server(args: argparse.Namespace) -> None:
    from flows import server

    local = server.local_server()
    if args.action == "start":
        server.start(local)
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
    import json

    try:
        return json.loads(text) if text else None
    except ValueError as error:
        raise UserError(f"--params: not JSON ({error})") from None


def cmd_demo(args: argparse.Namespace) -> None:
    from flows import deploy

    try:
        params = _json_params(args.params)
        flow_run = deploy.demo({"params": params} if params else None)
    except deploy.DeploymentError as error:
        raise UserError(str(error)) from None
    url = deploy.flow_run_url(flow_run.id)
    print(f"Prefect UI: {deploy.ui_url()}  (stop it with `prolab server stop`)")
    print(url)
    if not flow_run.state.is_completed():
        raise UserError(f"the end-to-end run ended {flow_run.state.name}: {flow_run.state.message}")


def cmd_deploy(args: argparse.Namespace) -> None:
    from flows import deploy

    try:
        names = deploy.deploy_all()
    except deploy.DeploymentError as error:
        raise UserError(str(error)) from None
    print("\n".join(names))


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prolab", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    label_space = commands.add_parser("label-space", help="describe -> embed -> cluster; prints the label space dir")
    _add_label_space_options(label_space)
    label_space.set_defaults(run=cmd_label_space)

    status = commands.add_parser("status", help="per stage: up to date, or would run and why")
    _add_label_space_options(status)
    status.set_defaults(run=cmd_status)

    train = commands.add_parser("train", help="train a model on a label space; prints the run's directory")
    _add_model_options(train)
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("evaluate", help="score a run; prints the directory holding metrics.json")
    _add_model_options(evaluate)
    evaluate.add_argument("--split", choices=["val", "test"], default="val")
    evaluate.add_argument("--checkpoint", type=Path, required=True, help="a training run directory or a .pth file")
    evaluate.set_defaults(run=cmd_evaluate)

    verify = commands.add_parser("verify", help="check every artifact against its manifest")
    _add_store(verify)
    verify.set_defaults(run=cmd_verify)

    llm = commands.add_parser("llm", help="the local LLM server").add_subparsers(dest="llm_command", required=True)
    serve = llm.add_parser("serve", help="serve an OpenAI-compatible LLM on 127.0.0.1 (foreground)")
    serve.add_argument("--engine", choices=["llama-cpp", "vllm"], default="llama-cpp")
    serve.add_argument("--model", help="GGUF path (llama-cpp; default: the packaged Gemma-3-270M) "
                                       "or a model name (vllm, e.g. meta-llama/Llama-2-7b-chat-hf)")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(run=cmd_llm_serve)

    prefect_server = commands.add_parser("server", help="the project's local Prefect server (127.0.0.1, SQLite)")
    prefect_server.add_argument("action", choices=["start", "stop", "status"])
    prefect_server.set_defaults(run=cmd_server)

    demo = commands.add_parser("demo", help="server + worker + deployments, then the end-to-end run; "
                                            "prints the UI and the run's address")
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


# Commands that talk to Prefect from their first step; label-space, train and evaluate connect
# themselves once their input is checked (``_connect``).
SERVER_COMMANDS = {"demo", "deploy"}


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


# The errors that mean bad input, a damaged store or an unreachable service, not a bug: (module, class).
EXPECTED_ERRORS = (
    ("tasks.descriptors", "DescriptorError"),
    ("tasks.datasets", "UnknownDatasetError"),
    ("tasks.cluster", "ClusterError"),
    ("tasks.embed", "EmbedderError"),
    ("tasks.label_space", "LabelSpaceError"),
    ("tasks.llm", "DescribeError"),
    ("tasks.llm_server", "LLMServerError"),
    ("tasks.processes", "ProcessStartError"),
    ("tasks.store", "ArtifactError"),
    ("prolab_models.datasets.layout", "DatasetLayoutError"),
    ("prolab_models.errors", "ProLabInputError"),
)


def _is_expected(error: BaseException) -> bool:
    """Whether ``error`` is one of EXPECTED_ERRORS; a module never imported cannot have raised
    its error, so nothing is imported here (that would cost seconds on every failure)."""
    if isinstance(error, (UserError, FileNotFoundError, NotADirectoryError, PermissionError)):
        return True
    for module_name, class_name in EXPECTED_ERRORS:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(error, getattr(module, class_name)):
            return True
    return False


def _format_validation(error: ValidationError) -> str:
    """Name each bad value by its command-line option."""
    lines = []
    for item in error.errors():
        where = f"--{str(item['loc'][-1]).replace('_', '-')}" if item["loc"] else "options"
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)


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
        print(f"prolab: error: {_format_validation(error)}", file=sys.stderr)
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
