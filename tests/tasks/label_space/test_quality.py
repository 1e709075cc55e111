"""The label-space quality report: collisions, near-collisions, each class's nearest class,
the closest pair, subset pairs and shared properties, on a multi-hot built to have each."""

from __future__ import annotations

import numpy as np

from tasks.label_space.quality import Separation, near_colliding_pairs, quality_markdown, quality_report

CLASSES = ["sky", "road", "sidewalk", "car", "bus"]
# sky and road collide; sidewalk is within car (car has one more property); bus is far from all.
MULTI_HOT = np.array([
    [1, 1, 0, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0, 0, 0],
    [0, 0, 1, 1, 1, 0, 0, 0],
    [0, 0, 1, 1, 1, 1, 0, 0],
    [0, 0, 0, 0, 0, 0, 1, 1],
])
SIZES = np.array([3, 2, 2, 2, 2, 1, 1, 1])


def test_separation_gives_cosine_and_hamming_of_every_pair() -> None:
    separation = Separation.of(MULTI_HOT)
    assert separation.cosine[0, 1] == 1.0 and separation.hamming[0, 1] == 0
    assert np.isclose(separation.cosine[2, 3], 3 / np.sqrt(12)) and separation.hamming[2, 3] == 1
    assert separation.cosine[0, 4] == 0.0 and separation.hamming[0, 4] == 4


def test_near_colliding_pairs_are_the_identical_and_the_nearly_identical() -> None:
    assert near_colliding_pairs(MULTI_HOT) == [(0, 1), (2, 3)]
    assert near_colliding_pairs(MULTI_HOT, near_cosine=1.0, near_hamming=0) == [(0, 1)]


def test_the_report_names_each_class_nearest_neighbour_the_closest_pair_and_subsets() -> None:
    report = quality_report(CLASSES, MULTI_HOT, SIZES, dropped={"copied": 2, "misattributed": 1})
    assert report["collisions"] == [["sky", "road"]]
    assert [p["classes"] for p in report["near_collisions"]] == [["sky", "road"], ["sidewalk", "car"]]
    assert report["nearest"]["sidewalk"] == {"class": "car", "cosine": round(3 / np.sqrt(12), 4), "hamming": 1}
    assert report["nearest"]["sky"]["class"] == "road" and report["nearest"]["sky"]["hamming"] == 0
    assert report["closest_pair"]["classes"] == ["sky", "road"] and report["min_hamming"] == 0
    assert report["subsets"] == [["sidewalk", "car"]], "identical sets are collisions, not subsets"
    assert report["shared_properties"] == [0, 1, 2, 3, 4] and report["properties_used_by_one_class"] == 3
    assert report["dropped_descriptions"] == {"copied": 2, "misattributed": 1}


def test_the_markdown_lists_near_collisions_subsets_and_the_nearest_class_of_each() -> None:
    text = quality_markdown(quality_report(CLASSES, MULTI_HOT, SIZES, dropped={"copied": 2}))
    assert "- near-collisions (multi-hot cosine >= 0.8 or at most 1 properties apart): 2" in text
    assert "  - sidewalk within car" in text
    assert "| sidewalk | 3 | car | 0.87 | 1 |" in text
    assert "descriptions dropped by verification: copied 2" in text
