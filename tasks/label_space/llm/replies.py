"""Reading an LLM's reply: the visual properties it lists, whatever shape the reply takes.

Bounded on purpose: a reply is data from outside, so a runaway or hostile one is cut to a
size the clustering can take, and nothing in it is evaluated.
"""

from __future__ import annotations

import re

from tasks.label_space.llm.prompts import MAX_REPAIR_PROPERTIES

# Parser bounds: a reply is read up to MAX_REPLY_CHARS; a property is cut to
# MAX_PROPERTY_CHARS; a class keeps at most MAX_PROPERTIES (a runaway list would flood the
# clustering with one class's bullets).
MAX_REPLY_CHARS = 16_384
MAX_PROPERTY_CHARS = 200
MAX_PROPERTIES = 32
# A reply without list markers is read line by line only when it has this many lines;
# a lone paragraph is prose (a refusal, a chat answer), not properties.
MIN_UNMARKED_LINES = 3
# An n-gram (n up to MAX_LOOP_NGRAM words) said MIN_LOOP_REPEATS times in a row is a
# generation loop: the property is cut after its first occurrence.
MAX_LOOP_NGRAM = 8
MIN_LOOP_REPEATS = 3
# The first few items of an aspect's list are kept (a base model's list drifts after them).
MAX_ASPECT_PROPERTIES = 4

_HTML_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
# ASCII markers need a following space ("-10 degrees", "*Note*" are not items).
_ITEM = re.compile(r"^(?:[•‣◦▪·]\s*|[-*+–—]\s+|\(?\d{1,3}[.)]\s+)(?P<text>.*)$")
_CATEGORY_LINE = re.compile(r"^\W*category\s*:", re.IGNORECASE)
_EMPHASIS = re.compile(r"\*\*|`")
_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=\w)[.!?](?:\s|$)")


def _cut_loop(text: str) -> str:
    """``text`` up to the end of the first n-gram that then repeats itself in a row."""
    words = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(text)]
    tokens = [w[2] for w in words]
    for i in range(len(tokens)):
        for n in range(1, MAX_LOOP_NGRAM + 1):
            if i + n * MIN_LOOP_REPEATS > len(tokens):
                break
            gram = tokens[i : i + n]
            if all(tokens[i + k * n : i + (k + 1) * n] == gram for k in range(1, MIN_LOOP_REPEATS)):
                return text[: words[i + n - 1][1]]
    return text


def _clean(text: str) -> str:
    """One property as plain text: no emphasis, no loop, bounded, no trailing punctuation."""
    text = _EMPHASIS.sub("", text)
    text = " ".join(text.split())
    text = _cut_loop(text)
    if len(text) > MAX_PROPERTY_CHARS:
        cut = text[:MAX_PROPERTY_CHARS]
        text = cut.rsplit(" ", 1)[0] if " " in cut else cut
    return text.strip(" \"'").rstrip(" .,;:").strip()


def parse_properties(reply: str) -> list[str]:
    """The visual properties in an LLM reply, in order, without duplicates.

    List items (``-``, ``*``, ``•``, ``–``, ``1.``, ``2)``...) are kept and prose lines
    dropped; a reply without any list item is read line by line when it has at least
    ``MIN_UNMARKED_LINES`` lines (a list whose markers the model forgot), else it yields
    nothing. A ``category:`` line after the first item ends the list (a model that ignored
    the stop sequence). Duplicates compare case-insensitively; the first spelling is kept.
    """
    lines = [line.strip() for line in reply[:MAX_REPLY_CHARS].splitlines()]
    items: list[str] = []
    unmarked: list[str] = []
    for line in lines:
        if not _WORD.search(line):
            continue
        if _CATEGORY_LINE.match(line):
            if items or unmarked:
                break
            continue
        match = _ITEM.match(line)
        if match:
            items.append(match.group("text"))
        elif not line.endswith(":"):
            unmarked.append(line)
    if not items:
        items = unmarked if len(unmarked) >= MIN_UNMARKED_LINES else []
    properties: list[str] = []
    seen: set[str] = set()
    for item in items:
        text = _clean(item)
        if not _WORD.search(text) or text.casefold() in seen:
            continue
        seen.add(text.casefold())
        properties.append(text)
        if len(properties) == MAX_PROPERTIES:
            break
    return properties


def parse_aspect_reply(reply: str, category: str, limit: int = MAX_ASPECT_PROPERTIES) -> list[str]:
    """The properties in the completion of an aspect prompt (which ends with the first "-").

    List items as ``parse_properties`` reads them (HTML tags dropped), each cut at its first
    sentence end (a base model rambles on), with the class's name replaced by "it": "the sky
    is blue" is a property ("it is blue"), the class name is not, and would pull every line
    of the class towards its name. At most ``limit``, and none that is only "it".
    """
    forms = [category, category + "s", category + "es"]
    forms += [category[:-1] + "ies"] if category.endswith("y") else []
    name = "(?:" + "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True)) + ")"
    article_and_name = re.compile(rf"\b(?:the|a|an)\s+{name}\b", re.IGNORECASE)
    bare_name = re.compile(rf"\b{name}\b", re.IGNORECASE)
    properties: list[str] = []
    for item in parse_properties("-" + _HTML_TAG.sub("", reply)):
        text = _SENTENCE_END.split(item, maxsplit=1)[0]
        text = bare_name.sub("it", article_and_name.sub("it", text))
        text = _clean(text)
        if text.casefold() in ("", "it") or text.casefold() in {p.casefold() for p in properties}:
            continue
        properties.append(text)
        if len(properties) == limit:
            break
    return properties


def parse_repair_reply(reply: str, target: str, other: str, completion: bool = False) -> list[str]:
    """The properties of ``target`` in a repair answer.

    The reply's list items (as ``parse_properties`` reads a chat reply, or ``parse_aspect_reply``
    the completion of ``repair_prompt``), less the lines that name ``other``: "unlike a
    sidewalk, ..." describes the contrast, and its embedding would pull ``target`` towards the
    very class it must be told from.
    """
    names_other = re.compile(rf"\b{re.escape(other.lower())}s?\b")
    lines = parse_aspect_reply(reply, target, MAX_REPAIR_PROPERTIES * 2) if completion else parse_properties(reply)
    kept = [line for line in lines if not names_other.search(line.lower())]
    return kept[:MAX_REPAIR_PROPERTIES]

