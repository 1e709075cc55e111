"""The documentation is tested, so that the next drift fails here rather than on a user.

Every ``prolab ...`` and ``prefect ...`` line of README.md and docs/*.md, in a code block or a
code span, is parsed by the real parsers (``flows.cli.build_parser`` and Prefect's own CLI): each
command and option exists; a whole command line from a code block parses as a user would type
it, its parameter models included; each config, dataset, ``../shared`` path, deployment and
profile it names exists; a deployment's ``--params`` fits that deployment's flow (or fails, where
the docs show it failing). README's measured numbers link to the RESULTS.md section they come
from, every link into RESULTS.md lands on a heading, the paths and modules the docs name exist,
and the configs' README names every module the plugin registers.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import importlib.util
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest

from flows.cli import build_parser
from flows.deploy import yaml_deployments
from flows.options import model_from_args
from flows.prefect_profile import PROFILE
from flows.server import DEFAULT_PORT, LocalServer
from prolab_models.configs import CONFIGS
from prolab_models.dataset_catalog import DATASET_CATALOG
from tasks import params as params_models
from tests.helpers.cli import PROJECT_ROOT, SHARED

README = PROJECT_ROOT / "README.md"
DOCS = (README, *sorted((PROJECT_ROOT / "docs").glob("*.md")))
CONFIGS_README = PROJECT_ROOT / "prolab_models" / "configs" / "README.md"
RESULTS = PROJECT_ROOT / "benchmarks" / "RESULTS.md"
SHELL_FENCES = ("", "bash", "sh", "shell", "console")
# What stands for a value in the docs: RUN, LS, JSON, CLASS,... and shell variables.
_PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*[,.]*|\$.*|.*\.\.\.)$")
_SEPARATORS = set("();|&<>")


@dataclasses.dataclass(frozen=True)
class Command:
    """A documented command line: where it is, its words after the program's name, whether it is a
    whole line from a code block (else a fragment of prose), and whether the docs show it failing."""

    where: str
    program: str
    words: tuple[str, ...]
    whole: bool
    fails: bool = False


def _split(text: str) -> list[list[str]]:
    """The simple commands of a shell line: its words, split at pipes, ``$(``, ``;`` and ``&&``."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for word in lexer:
        if set(word) <= _SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(word)
    return [words for words in commands if words]


def _commands_in(text: str, where: str, whole: bool) -> list[Command]:
    """The ``prolab`` and ``prefect`` commands of a line; a fragment's ``...`` (words left out) dropped."""
    found = []
    for words in _split(text):
        program = Path(words[0]).name
        if program in ("prolab", "prefect"):
            found.append(Command(where, program, tuple(w for w in words[1:] if whole or w != "..."), whole))
    return found


def documented_commands(path: Path) -> list[Command]:
    """Every ``prolab`` and ``prefect`` command line of a Markdown file: whole lines of shell code
    blocks (a ``$ `` prompt, where a block has them, marks the commands; an output line saying
    ``Error`` marks the command before it as one the docs show failing) and code spans in prose."""
    lines = path.read_text().splitlines()
    name = path.relative_to(PROJECT_ROOT)
    found: list[Command] = []
    fence: str | None = None
    block: list[tuple[int, str]] = []
    prose: list[tuple[int, str]] = []

    def flush_prose() -> None:
        text = " ".join(line for _, line in prose)
        for span in re.findall(r"`([^`]+)`", text):
            words = " ".join(word.strip("[]") for word in span.replace("\\|", "|").split())
            if re.match(r"(\S*/)?(prolab|prefect) ", words):
                found.extend(_commands_in(words, f"{name}:{prose[0][0]}", whole=False))
        prose.clear()

    def flush_block() -> None:
        prompted, first = any(line.startswith("$ ") for _, line in block), len(found)
        logical: list[tuple[int, str]] = []
        for number, line in block:
            if logical and logical[-1][1].endswith("\\"):
                logical[-1] = (logical[-1][0], logical[-1][1][:-1] + " " + line)
            else:
                logical.append((number, line))
        for number, line in logical:
            if prompted and not line.startswith("$ "):
                if "Error" in line and len(found) > first:
                    found[-1] = dataclasses.replace(found[-1], fails=True)
                continue
            found.extend(_commands_in(line.removeprefix("$ "), f"{name}:{number}", whole=True))
        block.clear()

    for number, line in enumerate(lines, start=1):
        if line.lstrip().startswith("```"):
            if fence is None:
                flush_prose()
                fence = line.strip()[3:].strip()
            else:
                if fence in SHELL_FENCES:
                    flush_block()
                fence = None
                block.clear()
        elif fence is not None:
            block.append((number, line))
        elif line.strip():
            prose.append((number, line))
        else:
            flush_prose()
    flush_prose()
    return found


COMMANDS = [command for path in DOCS for command in documented_commands(path)]
PROLAB_LINES = [c for c in COMMANDS if c.program == "prolab"]
PREFECT_LINES = [c for c in COMMANDS if c.program == "prefect"]


@functools.cache
def prolab_parser() -> argparse.ArgumentParser:
    return build_parser()


@functools.cache
def deployment_flows() -> dict[str, Any]:
    """``{flow/deployment: flow}`` of prefect.yaml, as ``prefect deployment run`` names them."""
    from prefect.flows import load_flow_from_entrypoint

    flows = {}
    for name, entrypoint in yaml_deployments().items():
        flow = load_flow_from_entrypoint(str(PROJECT_ROOT / entrypoint))
        flows[f"{flow.name}/{name}"] = flow
    return flows


@functools.cache
def prefect_profiles() -> list[str]:
    """The profiles every Prefect installation has (ephemeral, local, ...)."""
    from prefect.settings.profiles import DEFAULT_PROFILES_PATH

    return list(tomllib.loads(DEFAULT_PROFILES_PATH.read_text())["profiles"])


def _check_value(option: str, value: str, where: str) -> None:
    """A config, dataset or ../shared path the docs name exists (placeholders aside)."""
    if _PLACEHOLDER.match(value):
        return
    if option == "--config" and "/" not in value and not value.endswith(".py"):
        assert value in CONFIGS, f"{where}: --config {value}: not a config short name ({', '.join(CONFIGS)})"
    if option == "--dataset":
        assert value in DATASET_CATALOG, f"{where}: --dataset {value}: not a known dataset ({', '.join(DATASET_CATALOG)})"
    if value.startswith("../shared/") and SHARED.is_dir():
        assert (PROJECT_ROOT / value).exists(), f"{where}: {value} is not in ../shared"


def _check_values(command: Command) -> None:
    words = command.words
    for index, word in enumerate(words):
        option, equals, value = word.partition("=")
        if equals:
            _check_value(option, value, command.where)
        elif option.startswith("--") and index + 1 < len(words):
            _check_value(option, words[index + 1], command.where)
        else:
            _check_value("", word, command.where)


def _subcommand(parser: argparse.ArgumentParser, words: tuple[str, ...], where: str
                ) -> tuple[argparse.ArgumentParser, tuple[str, ...]]:
    """The (sub)parser ``words`` reach, and the words after its name."""
    while True:
        choices = next((action.choices for action in parser._actions
                        if isinstance(action, argparse._SubParsersAction)), None)
        if choices is None or not words or words[0].startswith("-"):
            return parser, words
        assert words[0] in choices, f"{where}: prolab {words[0]}: no such command (one of {', '.join(choices)})"
        parser, words = choices[words[0]], words[1:]


@pytest.mark.parametrize("command", PROLAB_LINES, ids=[c.where for c in PROLAB_LINES])
def test_a_documented_prolab_line_is_one_the_command_line_takes(command: Command) -> None:
    _check_values(command)
    if not command.whole:  # a fragment of prose: its command, its options and the choices it names exist
        parser, rest = _subcommand(prolab_parser(), command.words, command.where)
        for word in rest:
            if word.startswith("-"):
                option = word.split("=")[0]
                assert option in parser._option_string_actions, f"{command.where}: {parser.prog}: no option {option}"
        positional = [a for a in parser._actions if not a.option_strings and a.choices and a.dest != "help"]
        if positional and rest and not rest[0].startswith("-") and not _PLACEHOLDER.match(rest[0]):
            assert rest[0] in positional[0].choices, f"{command.where}: {parser.prog} {rest[0]}: not a choice"
        return
    try:
        args = prolab_parser().parse_args(list(command.words))
    except SystemExit:
        pytest.fail(f"{command.where}: prolab {' '.join(command.words)}: refused by the parser (its message above)")
    for model in {dest.split(".")[0] for dest in vars(args) if "." in dest}:
        model_from_args(getattr(params_models, model), args)  # the parameter models take the values too


def _prefect_command(command: Command) -> tuple[Any, dict[str, Any]]:
    """What Prefect's CLI makes of the words: the command's function and its bound arguments
    (none for a fragment of prose that leaves a required argument out)."""
    import cyclopts
    from prefect.cli._app import _app

    try:
        _, session, _ = _app.meta.parse_args(list(command.words), exit_on_error=False, print_error=False)
        words = list(session.arguments.get("tokens", ()))
        function, bound, _ = _app.parse_args(words, exit_on_error=False, print_error=False)
    except cyclopts.MissingArgumentError:
        if command.whole:
            raise
        return _app.parse_commands(words)[1][-1].default_command, {}
    except cyclopts.CycloptsError as error:
        pytest.fail(f"{command.where}: prefect {' '.join(command.words)}: {error}")
    return function, bound.arguments


@pytest.mark.parametrize("command", PREFECT_LINES, ids=[c.where for c in PREFECT_LINES])
def test_a_documented_prefect_line_is_one_prefect_takes_and_names_what_exists(command: Command) -> None:
    function, arguments = _prefect_command(command)
    group = function.__module__.rsplit(".", 1)[-1]
    if group == "profile" and "name" in arguments:
        assert arguments["name"] in {PROFILE, *prefect_profiles()}, \
            f"{command.where}: {arguments['name']}: neither the profile prolab saves ({PROFILE}) nor one of Prefect's"
    if group != "deployment" or "name" not in arguments or _PLACEHOLDER.match(arguments["name"]):
        assert "multiparams" not in arguments, command.where
        return
    flows = deployment_flows()
    assert arguments["name"] in flows, f"{command.where}: no deployment {arguments['name']} ({', '.join(flows)})"
    if "multiparams" not in arguments:
        return
    flow, parameters = flows[arguments["name"]], json.loads(arguments["multiparams"])
    if command.fails:
        with pytest.raises(Exception, match="invalid parameters"):
            flow.validate_parameters(parameters)
        return
    validated = flow.validate_parameters(parameters)["params"]
    end_to_end = validated if isinstance(validated, params_models.EndToEndParams) else None
    label_space = end_to_end.label_space if end_to_end else validated
    if label_space.describe.dataset is not None:
        _check_value("--dataset", label_space.describe.dataset, command.where)
    if end_to_end:
        _check_value("--config", end_to_end.train.config, command.where)


def test_the_docs_show_both_programs_and_the_readme_lines_a_user_starts_with() -> None:
    """The extraction itself works: a regression in it would let every test above pass on nothing."""
    readme = [c for c in COMMANDS if c.where.startswith("README.md")]
    assert {("prefect", ("profile", "use", PROFILE)), ("prefect", ("deployment", "ls"))} <= {
        (c.program, c.words) for c in readme if c.whole}
    assert any(c.words[:1] == ("label-space",) and c.whole for c in readme)
    assert any(c.fails for c in PREFECT_LINES), "docs/prefect.md shows a run the schema refuses"
    assert len(PROLAB_LINES) > 30 and len(PREFECT_LINES) > 10


def test_the_readme_gives_the_servers_ui_address() -> None:
    assert LocalServer(PROJECT_ROOT, DEFAULT_PORT).ui_url in README.read_text()


# ---------------------------------------------------------------------------------- links


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a file's headings (code blocks aside): lower case, punctuation
    dropped but for ``-`` and ``_``, spaces as ``-``, a repeated one numbered."""
    anchors: set[str] = set()
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6}\s+(.*)", line)):
            anchor = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            numbered, count = anchor, 0
            while numbered in anchors:
                count += 1
                numbered = f"{anchor}-{count}"
            anchors.add(numbered)
    return anchors


def _paragraphs(path: Path) -> list[str]:
    """A Markdown file's paragraphs, list items and table rows, without its code blocks."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return [p for p in re.split(r"\n\s*\n|\n(?=- |\| )", text) if p.strip()]


@pytest.mark.parametrize("doc", [*DOCS, CONFIGS_README], ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_every_link_into_results_lands_on_a_heading(doc: Path) -> None:
    anchors = github_anchors(RESULTS.read_text())
    for anchor in re.findall(r"\]\([^)]*RESULTS\.md#([^)]+)\)", doc.read_text()):
        assert anchor in anchors, f"{doc.name}: RESULTS.md#{anchor}: no such heading"


def test_the_readmes_measured_numbers_link_to_their_results_section() -> None:
    for paragraph in _paragraphs(README):
        unlinked = re.sub(r"\[[^\]]*\]\([^)]*\)", "", paragraph)
        assert "RESULTS.md" not in unlinked, f"README.md names RESULTS.md without linking it:\n{paragraph}"
        if re.search(r"\bmeasured\b", paragraph, re.IGNORECASE):
            assert re.search(r"\]\([^)]*RESULTS\.md#", paragraph), \
                f"README.md: a measured number without a link to its RESULTS.md section:\n{paragraph}"


# ---------------------------------------------------------------------------------- names


def _named_paths(doc: Path) -> set[str]:
    """The repository paths a doc names in code spans: ``tests/...``, ``tasks/x.py``, ``flows/y.py:f``."""
    spans = re.findall(r"`([^`\s]+)`", doc.read_text())
    return {span.split(":")[0] for span in spans
            if re.match(r"(flows|tasks|tests|prolab_models|data|csrc|benchmarks|scripts)/", span)
            and not re.search(r"[<*{]", span)}


@pytest.mark.parametrize("doc", [README, PROJECT_ROOT / "docs" / "prefect.md", CONFIGS_README],
                         ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_the_paths_and_modules_a_doc_names_exist(doc: Path) -> None:
    missing = [path for path in _named_paths(doc) if not (PROJECT_ROOT / path).exists()]
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"
    if doc == CONFIGS_README:
        return  # its results table says how each row was run then, under the modules' names of then
    for name in re.findall(r"`((?:flows|tasks|prolab_models)\.[\w.]*\w)", doc.read_text()):
        assert _resolves(name), f"{doc.name}: {name}: no such module or name"


def _resolves(dotted: str) -> bool:
    """Whether ``dotted`` names a module, or a name in one."""
    parts = dotted.split(".")
    for length in range(len(parts), 0, -1):
        try:
            found = importlib.util.find_spec(".".join(parts[:length])) is not None
        except ModuleNotFoundError:  # a part before is a module, not a package
            found = False
        if found:
            value: Any = importlib.import_module(".".join(parts[:length]))
            for attribute in parts[length:]:
                if not hasattr(value, attribute):
                    return False
                value = getattr(value, attribute)
            return True
    return False


def _expand_braces(name: str) -> list[str]:
    match = re.search(r"\{([^}]*)\}", name)
    if match is None:
        return [name]
    return [name[:match.start()] + part + name[match.end():] for part in match.group(1).split(",")]


def test_the_configs_readme_names_every_module_the_plugin_registers() -> None:
    import mmseg.registry

    import prolab_models.register  # noqa: F401  (registers the plugin)

    registered = {name for registry in ("MODELS", "DATASETS", "TRANSFORMS", "METRICS", "HOOKS",
                                        "OPTIM_WRAPPER_CONSTRUCTORS")
                  for name, module in getattr(mmseg.registry, registry).module_dict.items()
                  if getattr(module, "__module__", "").startswith("prolab_models.")}
    checklist = next(p for p in _paragraphs(CONFIGS_README) if "registered in mmseg's registries" in p)
    named = {expanded for span in re.findall(r"`([^`]+)`", checklist) for expanded in _expand_braces(span)}
    assert registered - named == set(), "registered but not in the configs README's checklist"
    assert len(registered) > 20
