"""Every question the pipeline asks an LLM: describe's few-shot and aspects prompts, repair's.

ProLab (method.md §1) describes every class with one few-shot chat completion at
temperature 0 and keeps the reply's bullet lines: the ``few-shot`` prompt, used with every
OpenAI-compatible backend. The embedded Gemma-3-270M is a base (not instruction-tuned)
model: in a chat it repeats the question, and given worked examples it copies their lines
into other classes. It is asked with the ``aspects`` prompt instead: one plain text
completion per aspect (colours, material, parts, what a photo of it shows), each the start
of a list with nothing to copy ("Parts of a car:\n-"), the answers merged. Repair asks, in
the same two styles, what tells one class from another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Bump when a prompt or its parser changes what a class's answer is: it is part of every
# cache key, so old answers are then asked again rather than silently reused.
PROMPT_VERSION = "prolab-describe-v1"  # the few-shot prompt (method.md)
ASPECTS_PROMPT_VERSION = "prolab-describe-aspects-v1"
REPAIR_PROMPT_VERSION = "prolab-repair-v1"

PromptStyle = Literal["few-shot", "aspects"]

SYSTEM_MESSAGE = "You are a helpful assistant."

INSTRUCTION = (
    'Describe what a category looks like, as in the examples: 8 to 15 short lines, each '
    'starting with "- ", one visual property per line (shape, material, texture, colour, '
    "typical context, parts, size)."
)

# Four worked examples (a thing, a stuff class, a vehicle, a part of a building), written for
# this project; the original used wall, building, sky and floor.
EXAMPLES: dict[str, tuple[str, ...]] = {
    "bench": (
        "long seat for several people",
        "flat horizontal surface at knee height",
        "made of wooden slats, metal or stone",
        "backrest and armrests on many designs",
        "stands on four legs or two solid supports",
        "brown, grey, green or black",
        "weathered or painted finish outdoors",
        "found in parks, along paths, at bus stops and in halls",
        "about as long as two or three people sitting side by side",
        "often bolted to the ground",
    ),
    "grass": (
        "low green ground cover",
        "made of many thin, narrow blades",
        "soft, fine texture that looks uniform from afar",
        "bright to dark green, yellow or brown when dry",
        "covers lawns, fields, parks and road verges",
        "flat or gently rolling areas with irregular edges",
        "mowed short in stripes or grown long and uneven",
        "often dotted with weeds, flowers or bare patches",
        "borders paths, trees and flower beds",
        "ankle to knee height",
    ),
    "bicycle": (
        "two-wheeled vehicle moved by pedalling",
        "two large spoked wheels with rubber tyres",
        "thin tubular frame shaped like a diamond",
        "handlebar at the front, saddle on top",
        "chain, pedals and crank between the wheels",
        "made of steel, aluminium or carbon fibre",
        "painted frame in any colour, black tyres",
        "about as tall as a person's waist",
        "ridden on roads, cycle lanes and paths",
        "often parked at racks or leaned against walls",
        "may carry a basket, lights, mudguards or a bell",
    ),
    "window": (
        "opening in a wall filled with glass",
        "rectangular, sometimes arched or round",
        "transparent or reflective glass panes",
        "framed in wood, aluminium or plastic",
        "divided by bars into smaller panes on some designs",
        "white, brown, grey or black frame",
        "set into the facades of buildings and the bodies of vehicles",
        "may have a sill, shutters, blinds or curtains",
        "often arranged in regular rows on a facade",
        "shows the sky or the room behind it",
    ),
}

# Small models (Gemma-3-270M) go on to invent the next "category:" block; stop there.
STOP = ["category:"]

# The aspects prompt: the start of one list per aspect, completed as plain text (a base model
# continues a list header; asked a question, it repeats it). Chosen on the demo's classes
# (benchmarks/RESULTS.md, "label-space quality"): shape, size and places were asked too, and
# Gemma-3-270M answered them with noise shared by every class ("100 meters", "The shape of it
# is the most important thing", "<strong>The Netherlands</strong>"); a photo's contents give
# the context instead (a road: "a car", "a truck", "a bus").
ASPECTS: dict[str, str] = {
    "colour": "Typical colours of a {category}:\n-",
    "material": "What a {category} is made of:\n-",
    "parts": "Parts of a {category}:\n-",
    "seen": "Things you see in a photo of a {category}:\n-",
}
# A short list each: a blank line or an image token (what Gemma's base model emits when it
# drifts) ends it.
ASPECT_STOP = ["\n\n", "<start_of_image>"]
ASPECT_MAX_TOKENS = 48

# What a repair answer may add to a class: the lines its prompt asks for, at most.
MAX_REPAIR_PROPERTIES = 6


@dataclass(frozen=True)
class Question:
    """One request: chat ``messages`` for a chat model, or a ``prompt`` for a base model to
    complete; ``stop`` ends the reply early (None: the server's own end)."""

    max_tokens: int
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    stop: list[str] | None = None


def build_messages(category: str, nudge: bool = False) -> list[dict[str, str]]:
    """The chat messages asking for ``category``'s properties; ``nudge`` restates the format."""
    blocks = [INSTRUCTION]
    blocks += ["category: " + name + "\n" + "\n".join("- " + p for p in props) for name, props in EXAMPLES.items()]
    target = "category: " + category
    if nudge:
        target += f'\n(Reply only with the list for {category}: 8 to 15 lines, each starting with "- ".)'
    blocks.append(target)
    return [
        {"role": "system", "content": SYSTEM_MESSAGE},
        {"role": "user", "content": "\n\n".join(blocks)},
    ]


def prompt_version(style: PromptStyle) -> str:
    """The version of a prompt style, part of every answer's cache key and of the describe key."""
    return PROMPT_VERSION if style == "few-shot" else ASPECTS_PROMPT_VERSION


def aspect_prompt(category: str, aspect: str) -> str:
    """The text whose completion lists ``category``'s ``aspect`` (a key of ``ASPECTS``)."""
    return ASPECTS[aspect].format(category=category)


def repair_prompt(target: str, other: str) -> str:
    """For base models (the ``aspects`` prompt style, e.g. the embedded Gemma): the start of a
    list, completed as plain text, of what tells a ``target`` from an ``other``."""
    return f"How to tell a {target} from a {other}: a {target}\n-"


def build_repair_messages(target: str, other: str) -> list[dict[str, str]]:
    """For chat models: the messages asking what a ``target`` looks like that an ``other`` does not."""
    question = (
        f"What does a {target} look like that a {other} does not? "
        f'Answer with 3 to {MAX_REPAIR_PROPERTIES} short lines, each starting with "- ", '
        f"each a visual property of a {target} (colour, shape, material, parts, where it is found, size). "
        f"Do not describe the {other}."
    )
    return [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": question}]


def describe_question(category: str, aspect: str | None, max_tokens: int, nudge: bool = False) -> Question:
    """Describe's question about ``category``: the few-shot chat (``aspect`` None), or the
    completion of one aspect's list, shorter (a base model rambles on past a few items)."""
    if aspect is None:
        return Question(max_tokens, messages=build_messages(category, nudge), stop=STOP)
    return Question(min(max_tokens, ASPECT_MAX_TOKENS), prompt=aspect_prompt(category, aspect), stop=ASPECT_STOP)


def repair_question(target: str, other: str, style: str, max_tokens: int) -> Question:
    """Repair's question, in the prompt style the describe stage used with the same model."""
    if style == "aspects":
        return Question(ASPECT_MAX_TOKENS, prompt=repair_prompt(target, other), stop=ASPECT_STOP)
    return Question(max_tokens, messages=build_repair_messages(target, other))
