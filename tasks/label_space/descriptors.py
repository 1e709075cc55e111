"""Reading and writing descriptor files: ``{class: [description, ...]}`` in label order.

The paper's format (as in ``shared/data/prolab_descriptors``). Every check names the file,
the class and the position of what is wrong, so a user can fix it without guessing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from tasks.class_names import check_distinct
from tasks.errors import ProLabError
from tasks.files import loads_json

MAX_DESCRIPTOR_BYTES = 64 * 1024 * 1024
MAX_DESCRIPTION_CHARS = 1000

Descriptions = dict[str, list[str]]


class DescriptorError(ProLabError, ValueError):
    """A descriptor file or mapping is malformed; the message says where."""


def validate_descriptions(data: object, source: str) -> Descriptions:
    """Check the paper's format (class names a reader can tell apart) and return it with
    whitespace stripped."""
    if not isinstance(data, dict):
        raise DescriptorError(f"{source}: the top level must be an object {{class: [description, ...]}}, "
                              f"found {type(data).__name__}")
    if not data:
        raise DescriptorError(f"{source}: no classes")
    check_distinct((name for name in data if isinstance(name, str)), source)  # "Car" beside "car "
    clean: Descriptions = {}
    for name, texts in data.items():
        if not isinstance(name, str) or not name.strip():
            raise DescriptorError(f"{source}: a class name is empty")
        where = f'{source}: class "{name}"'
        if not isinstance(texts, list):
            raise DescriptorError(f"{where}: expected a list of descriptions, found {type(texts).__name__}")
        if not texts:
            raise DescriptorError(f"{where}: has no descriptions")
        kept = []
        for position, text in enumerate(texts, start=1):
            if not isinstance(text, str):
                kind = "a number" if isinstance(text, (int, float)) and not isinstance(text, bool) else type(text).__name__
                if isinstance(text, float) and math.isnan(text):
                    kind = "NaN"
                raise DescriptorError(f"{where}: description {position} is {kind}, expected text")
            if not text.strip():
                raise DescriptorError(f"{where}: description {position} is empty")
            if len(text) > MAX_DESCRIPTION_CHARS:
                raise DescriptorError(
                    f"{where}: description {position} has {len(text)} characters (at most {MAX_DESCRIPTION_CHARS})")
            kept.append(text.strip())
        clean[name.strip()] = kept
    return clean


def read_descriptions(path: Path) -> Descriptions:
    """Load and validate a descriptor file."""
    if path.is_dir():
        raise DescriptorError(f"{path}: is a directory, expected a JSON descriptor file")
    if not path.is_file():
        raise DescriptorError(f"{path}: no such file")
    size = path.stat().st_size
    if size > MAX_DESCRIPTOR_BYTES:
        raise DescriptorError(f"{path}: {size} bytes is too large for a descriptor file "
                              f"(at most {MAX_DESCRIPTOR_BYTES})")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DescriptorError(f"{path}: not UTF-8 text (byte {error.start})") from None
    try:
        data = loads_json(text, str(path))
    except json.JSONDecodeError as error:
        raise DescriptorError(f"{path}: malformed JSON at line {error.lineno} column {error.colno}: {error.msg}") from None
    return validate_descriptions(data, str(path))


def order_by_classes(descriptions: Descriptions, classes: list[str], source: str) -> Descriptions:
    """Put descriptions in the dataset's label order; every class must be described."""
    missing = [c for c in classes if c not in descriptions]
    extra = [c for c in descriptions if c not in classes]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no descriptions for {_some(missing)}")
        if extra:
            parts.append(f"classes not in the dataset: {_some(extra)}")
        raise DescriptorError(f"{source}: " + "; ".join(parts))
    return {c: descriptions[c] for c in classes}


def _some(names: list[str], shown: int = 8) -> str:
    listed = ", ".join(map(repr, names[:shown]))
    return listed + (f" and {len(names) - shown} more" if len(names) > shown else "")


def descriptions_table(descriptions: Descriptions) -> pd.DataFrame:
    """The tidy form: one row per description."""
    rows = [
        {"class_index": ci, "class_name": name, "description_index": di, "text": text}
        for ci, (name, texts) in enumerate(descriptions.items())
        for di, text in enumerate(texts)
    ]
    return pd.DataFrame(rows, columns=["class_index", "class_name", "description_index", "text"])


def write_descriptions(directory: Path, descriptions: Descriptions) -> None:
    """``descriptions.json`` (the paper's format) and ``descriptions.parquet`` (tidy)."""
    (directory / "descriptions.json").write_text(json.dumps(descriptions, indent=2, ensure_ascii=False))
    descriptions_table(descriptions).to_parquet(directory / "descriptions.parquet", index=False)


def load_descriptions(directory: Path) -> Descriptions:
    """The ``descriptions.json`` that ``write_descriptions`` left in an artifact directory."""
    return json.loads((directory / "descriptions.json").read_text())
