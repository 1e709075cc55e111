"""What the stages show in the Prefect UI: tables, markdown and pictures under stable keys.

Each stage module has a ``reports(directory)`` builder that reads its finished artifact and
returns ``Report`` items; ``publish`` turns them into Prefect artifacts. Builders never write
into the directory (its files are hashed in its manifest) and skip what a stage did not write
(no LLM report for an import, no pictures for a plain model), so they are plain functions,
tested without a server. Pictures go inline as ``data:`` URIs, kept small: each one is stored
in the server's database.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tasks.files import MANIFEST

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 80_000


@dataclass(frozen=True)
class Report:
    """One Prefect artifact: ``data`` is rows (table), text (markdown) or a URL (image)."""

    key: str
    kind: Literal["table", "markdown", "image"]
    data: Any
    description: str = ""


def artifact_key(*parts: str) -> str:
    """A key Prefect accepts (lowercase letters, numbers, dashes) made of ``parts``."""
    return "-".join(re.sub(r"[^a-z0-9]+", "-", part.lower()).strip("-") for part in parts if part)


def read_json(path: Path) -> Any | None:
    """A JSON file of an artifact, or None when the stage did not write it."""
    return json.loads(path.read_text()) if path.is_file() else None


def manifest_params(directory: Path) -> dict[str, Any]:
    """The parameters an artifact was made with, from its manifest."""
    manifest = read_json(directory / MANIFEST) or {}
    return manifest.get("params", {})


def image(key: str, picture: Path, description: str) -> Report:
    from tasks.visualization import png_data_uri

    return Report(key, "image", png_data_uri(picture, MAX_IMAGE_BYTES), description)


def markdown_table(rows: dict[str, Any]) -> str:
    """A two-column markdown table of names and values."""
    lines = ["| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows.items()]
    return "\n".join(lines)


def publish(reports: list[Report]) -> None:
    """Create the Prefect artifacts (linked to the current flow and task run)."""
    from prefect.artifacts import create_image_artifact, create_markdown_artifact, create_table_artifact

    for report in reports:
        if report.kind == "table":
            create_table_artifact(report.data, key=report.key, description=report.description)
        elif report.kind == "markdown":
            create_markdown_artifact(report.data, key=report.key, description=report.description)
        else:
            create_image_artifact(report.data, key=report.key, description=report.description)


def publish_reports(stage: str, build: Callable[[Path], list[Report]], directory: Path) -> None:
    """Publish a stage's reports. A report that cannot be built is a warning in the run's
    logs, not a failed stage: the artifact itself is complete and stored."""
    try:
        reports = build(directory)
    except Exception as error:  # noqa: BLE001 - any reader error: the stage's result stands
        _run_logger().warning("%s: no UI report for %s (%s: %s)", stage, directory, type(error).__name__, error)
        return
    publish(reports)


def _run_logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return log
