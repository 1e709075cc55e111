"""One answer cache for every question asked of an LLM, describe's and repair's.

An answer is stored per what determines it (its *identity*: model, prompt version, the class
or pair asked about, generation settings), one JSON file named by the identity's hash, so
editing one class asks the LLM about that class only, a failed run keeps every answer it
already obtained, and a rerun asks nothing. The base URL is not part of it: one model served
anywhere answers alike.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.files import atomic_write, sha256_json
from tasks.label_space.llm.prompts import ASPECT_MAX_TOKENS, REPAIR_PROMPT_VERSION, prompt_version

if TYPE_CHECKING:
    from tasks.label_space.llm.client import LLMSettings

log = logging.getLogger(__name__)

# Where each stage's answers live, under the artifact store's root (kept by ``prolab gc``).
DESCRIBE_ANSWERS = Path(".cache") / "llm"
REPAIR_ANSWERS = Path(".cache") / "llm-repair"

Entry = dict[str, Any]


def describe_identity(category: str, settings: LLMSettings, aspect: str | None = None) -> dict[str, Any]:
    """What determines describe's answer about ``category``: one per class with the few-shot
    prompt, one per (class, aspect) with the aspects prompt."""
    identity: dict[str, Any] = {
        "prompt_version": prompt_version(settings.prompt),
        "model": settings.model,
        "class": category,
        "temperature": settings.temperature,
        "max_tokens": settings.max_tokens,
    }
    if aspect is not None:
        identity.update(aspect=aspect, max_tokens=min(settings.max_tokens, ASPECT_MAX_TOKENS))
    return identity


def repair_identity(model: str, style: str, target: str, other: str) -> dict[str, Any]:
    """What determines repair's answer about the ordered pair (``target``, ``other``)."""
    return {"prompt_version": REPAIR_PROMPT_VERSION, "style": style, "model": model, "target": target, "other": other}


class AnswerCache:
    """Answers in ``directory``: ``{"identity", "raw_reply", ...what the asker parsed}`` per file."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, identity: dict[str, Any]) -> Path:
        return self.directory / f"{sha256_json(identity)[:32]}.json"

    def get(self, identity: dict[str, Any], check: Callable[[Entry], bool] | None = None) -> Entry | None:
        """The entry answering ``identity``; None when absent, unreadable, for another question,
        or refused by ``check`` (what the asker needs of an entry), so that it is asked again."""
        path = self.path(identity)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            log.warning("ignoring unreadable LLM cache entry %s: %s", path, error)
            return None
        if (
            not isinstance(entry, dict)
            or entry.get("identity") != identity
            or not isinstance(entry.get("raw_reply"), str)
            or (check is not None and not check(entry))
        ):
            log.warning("ignoring LLM cache entry %s: it does not hold an answer to %s", path, identity)
            return None
        return entry

    def put(self, identity: dict[str, Any], raw_reply: str, **parsed: Any) -> None:
        """Store an answer; a reader sees the old entry or the new one, never a part."""
        entry = {"identity": identity, "raw_reply": raw_reply, **parsed}
        atomic_write(self.path(identity), json.dumps(entry, ensure_ascii=False, indent=1))
