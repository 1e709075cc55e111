"""Class names a reader cannot tell apart: the same letters but for case, spacing or Unicode form.

"Car" and "car ", or "café" written with a composed and a decomposed "é", look like one class
in a table, a legend or a log line, yet are two keys: two classes with two rows of properties,
or one class silently overwritten by the other. A list holding both spellings is refused,
naming both.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from tasks.errors import ProLabError


class IndistinctNamesError(ProLabError, ValueError):
    """Two class names of one list differ only in case, spacing or Unicode form."""


def _spaced(name: str) -> str:
    return " ".join(name.split())


def _nfkc(name: str) -> str:
    return unicodedata.normalize("NFKC", name)


def folded(name: str) -> str:
    """What a reader sees of a name: Unicode compatibility form, spacing collapsed, case folded."""
    return _nfkc(_spaced(_nfkc(name)).casefold())


def _differences(first: str, second: str) -> list[str]:
    """Which of case, spacing and Unicode form tell two names with one ``folded`` form apart:
    those without whose folding they would still differ."""
    found = [kind for kind, unfolded in (("case", lambda n: _spaced(_nfkc(n))),
                                         ("spacing", lambda n: _nfkc(_nfkc(n).casefold())),
                                         ("Unicode form", lambda n: _spaced(n).casefold()))
             if unfolded(first) != unfolded(second)]
    return found or ["Unicode form"]


def check_distinct(names: Iterable[str], where: str | None = None) -> None:
    """Refuse two names of ``names`` that differ but fold to one (``folded``); ``where`` names
    the list (a file, an option). The same name twice is left to the caller's own check."""
    seen: dict[str, str] = {}
    for name in names:
        first = seen.setdefault(folded(name), name)
        if first == name:
            continue
        kinds = _differences(first, name)
        spelled = f"{first!r} and {name!r}"
        if "Unicode form" in kinds:
            spelled += f" ({ascii(first)} and {ascii(name)})"
        how = " and ".join([", ".join(kinds[:-1]), kinds[-1]] if len(kinds) > 1 else kinds)
        raise IndistinctNamesError(f"{where + ': ' if where else ''}class names {spelled} differ only in {how}, "
                                   f"so no one can tell them apart; spell each class one way")
