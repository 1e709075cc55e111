"""Class names a reader cannot tell apart are refused, naming both spellings and how they differ;
names that differ in their letters, and the same name twice (each list's own check), pass."""

from __future__ import annotations

import unicodedata

import pytest

from tasks.class_names import IndistinctNamesError, check_distinct, folded
from tasks.params import TrainParams

CAFE_NFC = unicodedata.normalize("NFC", "café")
CAFE_NFD = unicodedata.normalize("NFD", "café")


@pytest.mark.parametrize("names, expected", [
    (["Car", "road", "car "], "list.json: class names 'Car' and 'car ' differ only in case and spacing"),
    (["traffic light", "traffic  light"], "class names 'traffic light' and 'traffic  light' differ only in spacing"),
    (["person", "\tperson"], "class names 'person' and '\\tperson' differ only in spacing"),
    ([CAFE_NFC, CAFE_NFD], r"('caf\xe9' and 'cafe\u0301') differ only in Unicode form"),
    (["ｃａｒ", "Car"], r"('\uff43\uff41\uff52' and 'Car') differ only in case and Unicode form"),
])
def test_names_differing_only_in_case_spacing_or_unicode_form_are_refused(names: list[str], expected: str) -> None:
    with pytest.raises(IndistinctNamesError) as refused:
        check_distinct(names, "list.json")
    assert expected in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("names", [
    ["car", "bus", "truck"],
    ["car", "cart"],
    ["bed", "bed", "table"],  # the same spelling twice: left to the list's own check (JSON's repeated key, ...)
    ["pole", "poles"],
])
def test_names_differing_in_their_letters_pass(names: list[str]) -> None:
    check_distinct(names, "list.json")


def test_folding_is_what_a_reader_sees() -> None:
    assert folded(" Traffic\u00a0 Light ") == folded("traffic light") == "traffic light"
    assert folded(CAFE_NFD) == folded(CAFE_NFC) != folded("cafe")


def test_held_out_classes_are_refused_by_their_parameter() -> None:
    with pytest.raises(ValueError, match=r"held_out\n.*class names 'car' and 'Car' differ only in case"):
        TrainParams(held_out=["car", "Car"])
    assert TrainParams(held_out=["car", "person"]).held_out == ["car", "person"]
