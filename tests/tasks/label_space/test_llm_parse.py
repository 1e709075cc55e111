"""parse_properties: what survives of an LLM reply, whatever shape the reply takes."""

from __future__ import annotations

from tasks.label_space.llm.prompts import (
    ASPECTS,
    EXAMPLES,
    PROMPT_VERSION,
    STOP,
    aspect_prompt,
    build_messages,
    prompt_version,
)
from tasks.label_space.llm.replies import (
    MAX_PROPERTIES,
    MAX_PROPERTY_CHARS,
    MAX_REPLY_CHARS,
    parse_aspect_reply,
    parse_properties,
)


def test_dash_bullets_are_kept_in_order_without_marker_or_trailing_punctuation() -> None:
    reply = "- four wheels\n-   metal body.\n- windows on the sides;\n"
    assert parse_properties(reply) == ["four wheels", "metal body", "windows on the sides"]


def test_other_bullet_markers_and_numbered_lines_are_list_items() -> None:
    reply = "• round\n* made of glass\n– transparent\n1. on tables\n2) small\n(3) has a stem\n+ fragile"
    assert parse_properties(reply) == [
        "round", "made of glass", "transparent", "on tables", "small", "has a stem", "fragile",
    ]


def test_prose_and_headers_around_a_list_are_dropped() -> None:
    reply = (
        "Sure! Here are the visual properties of a car:\n\n"
        "**Visual properties:**\n"
        "- **Shape:** boxy body\n"
        "- four `wheels`\n\n"
        "I hope this helps."
    )
    assert parse_properties(reply) == ["Shape: boxy body", "four wheels"]


def test_a_list_without_markers_is_read_line_by_line() -> None:
    reply = "long and thin\nmade of wood\nfound in parks\n"
    assert parse_properties(reply) == ["long and thin", "made of wood", "found in parks"]


def test_a_lone_paragraph_is_prose_not_properties() -> None:
    assert parse_properties("I'm sorry, I cannot describe that.") == []
    assert parse_properties("A car.\nIt is red.") == []


def test_empty_and_marker_only_replies_yield_nothing() -> None:
    assert parse_properties("") == []
    assert parse_properties("\n \n\t") == []
    assert parse_properties("-\n- \n*\n1.\n---") == []


def test_duplicates_compare_case_insensitively_and_the_first_spelling_wins() -> None:
    reply = "- Red paint\n- red paint\n- RED  PAINT.\n- wheels\n- Wheels"
    assert parse_properties(reply) == ["Red paint", "wheels"]


def test_a_looping_bullet_is_cut_after_its_first_phrase() -> None:
    reply = "- red " + "red " * 200 + "\n- made of " + "wood, " * 50 + "\n- tall"
    assert parse_properties(reply) == ["red", "made of wood", "tall"]
    multi = "- shiny metal " + "and glass " * 30
    assert parse_properties(multi) == ["shiny metal and glass"]


def test_an_ordinary_repeated_word_is_not_a_loop() -> None:
    assert parse_properties("- very very large\n- bye bye sign") == ["very very large", "bye bye sign"]


def test_the_next_category_block_ends_the_list() -> None:
    reply = "category: car\n- four wheels\n- metal body\n\ncategory: truck\n- cargo bed"
    assert parse_properties(reply) == ["four wheels", "metal body"]


def test_huge_replies_are_bounded() -> None:
    long_line = "- " + " ".join(f"word{i}" for i in range(2000))
    (prop,) = parse_properties(long_line)
    assert len(prop) <= MAX_PROPERTY_CHARS and prop.startswith("word0 word1")
    many = "\n".join(f"- property number {i}" for i in range(MAX_REPLY_CHARS))
    props = parse_properties(many)
    assert len(props) == MAX_PROPERTIES and props[0] == "property number 0"
    tail_only = "x" * MAX_REPLY_CHARS + "\n- hidden past the bound"
    assert parse_properties(tail_only) == []


def test_replies_are_data_not_code_or_paths() -> None:
    reply = "- __import__('os').system('echo hi')\n- ../../etc/passwd\n- {{7*7}}"
    assert parse_properties(reply) == ["__import__('os').system('echo hi')", "../../etc/passwd", "{{7*7}}"]


def test_prompt_has_four_examples_of_8_to_15_bullets_then_the_target() -> None:
    system, user = build_messages("traffic light")
    assert system["role"] == "system" and user["role"] == "user"
    assert len(EXAMPLES) == 4 and all(8 <= len(props) <= 15 for props in EXAMPLES.values())
    for name, props in EXAMPLES.items():
        block = f"category: {name}\n" + "\n".join(f"- {p}" for p in props)
        assert block in user["content"]
        assert parse_properties(block) == list(props)
    assert user["content"].endswith("category: traffic light")
    assert "Reply only" in build_messages("traffic light", nudge=True)[1]["content"]
    assert STOP == ["category:"] and PROMPT_VERSION


def test_the_aspects_prompt_is_the_start_of_one_list_per_aspect_with_nothing_to_copy() -> None:
    prompts = [aspect_prompt("traffic light", aspect) for aspect in ASPECTS]
    assert set(ASPECTS) == {"colour", "material", "parts", "seen"}
    assert all("a traffic light" in p and p.endswith(":\n-") for p in prompts)
    assert not any(line in p for p in prompts for lines in EXAMPLES.values() for line in lines)
    assert prompt_version("few-shot") == PROMPT_VERSION != prompt_version("aspects")


def test_an_aspect_reply_is_cut_at_sentence_ends_with_the_class_name_replaced_by_it() -> None:
    reply = (" The sky is blue, the sun is shining. It is bright.\n- Skies turn orange at dusk\n"
             "- The sky\n- grey when it rains!\n- <strong>white</strong> clouds\n- never seen")
    assert parse_aspect_reply(reply, "sky") == ["it is blue, the sun is shining", "it turn orange at dusk",
                                                "grey when it rains", "white clouds"]


def test_an_aspect_reply_keeps_decimals_and_drops_repeats_and_empty_items() -> None:
    reply = " about 1.5 m tall\n- About 1.5 m tall.\n- \n- a car"
    assert parse_aspect_reply(reply, "car") == ["about 1.5 m tall"]
    assert parse_aspect_reply("", "car") == []
