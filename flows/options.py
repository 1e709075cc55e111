"""Command-line options made from the pydantic parameter models (``tasks.params``).

One source of truth: an option's name, type, choices, default and help all come from the
model's field, so the CLI, the flows and the deployments cannot disagree. Options left out on
the command line are absent from the parsed namespace, so the model's own default applies.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _extra(info: FieldInfo | None) -> dict[str, Any]:
    return info.json_schema_extra if info is not None and isinstance(info.json_schema_extra, dict) else {}


def cli_name(model: type[BaseModel], field: str) -> str:
    """The option a field is set by: its ``json_schema_extra["cli"]``, else ``--kebab-case``."""
    return str(_extra(model.model_fields.get(field)).get("cli", option_name(field)))


def _splitter(separator: str | None) -> Any:
    """An argparse ``type`` giving a list per value: the value itself, or its non-blank parts."""
    if separator is None:
        return lambda value: [value]
    return lambda value: [part.strip() for part in value.split(separator) if part.strip()]


def describe_errors(error: ValidationError, models: Iterable[type[BaseModel]]) -> str:
    """A pydantic error of one of ``models`` (built from the command line) with each bad value
    named by its option."""
    model = next((m for m in models if m.__name__ == error.title), None)
    lines = []
    for item in error.errors():
        field = str(item["loc"][-1]) if item["loc"] else None
        where = "options" if field is None else (cli_name(model, field) if model else option_name(field))
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)


def _dest(model: type[BaseModel], field: str) -> str:
    return f"{model.__name__}.{field}"


def _unwrap_optional(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _help(info: FieldInfo, default: str | None = None) -> str:
    """The field's description and its default: ``default`` when given (a command whose
    defaults come from elsewhere), else the model's own, when it has one worth saying."""
    text = info.description or ""
    if default is None and not info.is_required() and info.default_factory is None \
            and info.default not in (None, {}, [], ""):
        default = str(info.default.value if hasattr(info.default, "value") else info.default)
    return text if default is None else f"{text} (default: {default})"


def _scalar(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return None if text == "None" else text


def _next_comma(text: str) -> int:
    """The first comma outside brackets (mmengine counts each kind of bracket on its own)."""
    for index, char in enumerate(text):
        before = text[:index]
        if char == "," and before.count("(") == before.count(")") and before.count("[") == before.count("]"):
            return index
    return len(text)


def _value(text: str) -> Any:
    text = text.strip("'\"").replace(" ", "")
    kind: type = list
    if text.startswith("(") and text.endswith(")"):
        kind, text = tuple, text[1:-1]
    elif text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    elif "," not in text:
        return _scalar(text)
    values = []
    while text:
        end = _next_comma(text)
        values.append(_value(text[:end]))
        text = text[end + 1:]
    return kind(values)


def parse_key_values(items: Sequence[str], option: str = "--cfg-options") -> dict[str, Any]:
    """``KEY=VALUE`` items as mmengine's ``DictAction`` (mmseg's tools/train.py) reads them: ints,
    floats, true/false, None, else text; ``V1,V2`` and ``[V1,V2]`` lists, ``(V1,V2)`` tuples,
    nested. The same values (tests/flows/test_options.py compares the two), without importing
    mmengine, which costs an unchanged rerun 0.8 s."""
    parsed = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise argparse.ArgumentTypeError(f"{option} {item!r}: expected KEY=VALUE")
        if value.count("(") != value.count(")") or value.count("[") != value.count("]"):
            raise argparse.ArgumentTypeError(f"{option} {item!r}: unbalanced brackets")
        parsed[key] = _value(value)
    return parsed


class _KeyValues(argparse.Action):
    """``KEY=VALUE ...`` into a dict, as ``parse_key_values`` reads them; repeated options add up."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        try:
            parsed = parse_key_values(values, option_string or self.dest)
        except argparse.ArgumentTypeError as error:
            raise argparse.ArgumentError(self, str(error)) from None
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest, None) or {}), **parsed})


def add_model_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, model: type[BaseModel],
                      exclude: tuple[str, ...] = (), default: str | None = None) -> None:
    """An option per field of ``model`` (``snake_case`` -> ``--kebab-case``, or the field's
    ``json_schema_extra["cli"]`` name), stored under ``<Model>.<field>`` so that two models'
    fields of one name do not collide. ``default`` is what the help gives as every option's
    default, where the command takes them from elsewhere than the model."""
    for name, info in model.model_fields.items():
        if name in exclude:
            continue
        kind = _unwrap_optional(info.annotation)
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": _help(info, default),
                                  "dest": _dest(model, name)}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is Literal:
            kwargs["choices"] = list(typing.get_args(kind))
        elif typing.get_origin(kind) is list:
            # repeated (--query A --query B); a field with json_schema_extra["cli_split"] also splits
            # each value on it (--held-out person,car)
            kwargs.update(action="extend", type=_splitter(_extra(info).get("cli_split")), metavar=name.upper())
        elif typing.get_origin(kind) is dict or kind is dict:
            kwargs.update(nargs="+", action=_KeyValues, metavar="KEY=VALUE")
        elif kind in (int, float, Path):
            kwargs.update(type=kind, metavar=name.upper())
        else:
            kwargs["metavar"] = name.upper()
        parser.add_argument(cli_name(model, name), **kwargs)


def model_from_args(model: type[BaseModel], args: argparse.Namespace, **overrides: Any) -> BaseModel:
    """``model`` built from the options given on the command line (its defaults for the rest)."""
    values = {name: getattr(args, _dest(model, name)) for name in model.model_fields if hasattr(args, _dest(model, name))}
    return model(**{**values, **overrides})
