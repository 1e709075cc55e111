"""Session fixtures for the transfer tests (new classes, queries, held-out classes): a demo label
space that the label-space stages built from written descriptions (so new classes and queries
are embedded by its real embedder), a tiny run trained on it, and one trained with ``person``
held out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.store import ArtifactStore
from tests.helpers.demo_runs import tiny_options

# Three lines a demo class; with K = 8 every line is at cosine >= 0.6 to its property's centre
# (all-MiniLM-L6-v2), and unrelated phrases ("a plate of spaghetti") at most 0.25.
DEMO_DESCRIPTIONS = {
    "sky": ["blue sky with white clouds", "bright open air above the horizon",
            "light blue gradient at the top of the picture"],
    "building": ["tall building with rows of windows", "grey concrete facade", "rectangular walls of a house"],
    "road": ["dark grey asphalt road", "white lane markings on the street", "flat surface for cars to drive on"],
    "sidewalk": ["paved walkway beside the road", "square paving stones", "raised kerb at the edge of the street"],
    "tree": ["green leafy crown", "brown wooden trunk", "round foliage of a tree"],
    "car": ["metal body of a vehicle", "four black wheels", "windshield and headlights"],
    # two lines near other classes' properties, so that person held out is still expressed (cosine
    # 0.49-0.56 to the sidewalk property of the label space without it; the third line, 0.34, is not)
    "person": ["a pedestrian on the paved walkway", "head, arms and legs", "a person standing beside the road"],
}
HELD_OUT = ["person"]


@pytest.fixture(scope="session")
def transfer_store(tmp_path_factory: pytest.TempPathFactory) -> ArtifactStore:
    return ArtifactStore(tmp_path_factory.mktemp("transfer") / "artifacts")


@pytest.fixture(scope="session")
def described_label_space(transfer_store: ArtifactStore) -> Path:
    """describe (import) -> verify -> embed -> cluster (K = 8) -> repair (off) of ``DEMO_DESCRIPTIONS``."""
    from tasks.params import EndToEndParams
    from tasks.registry import LABEL_SPACE, LABEL_SPACE_STAGES, run_stages

    descriptors = transfer_store.root.parent / "demo_descriptions.json"
    descriptors.write_text(json.dumps(DEMO_DESCRIPTIONS))
    params = EndToEndParams.model_validate({"label_space": {
        "describe": {"dataset": "demo", "descriptors": str(descriptors)}, "cluster": {"k": 8}}})
    return run_stages(params, transfer_store, LABEL_SPACE_STAGES)[LABEL_SPACE]


@pytest.fixture(scope="session")
def described_run(tmp_path_factory: pytest.TempPathFactory, demo_root: Path, described_label_space: Path) -> Path:
    """A work dir of 2 iterations of the tiny demo model on ``described_label_space``."""
    from tasks.model.train import train

    work_dir = tmp_path_factory.mktemp("described-run") / "work"
    train("demo", described_label_space, work_dir, demo_root, tiny_options(2))
    return work_dir


@pytest.fixture(scope="session")
def held_out_run(tmp_path_factory: pytest.TempPathFactory, demo_root: Path, described_label_space: Path,
                 transfer_store: ArtifactStore) -> Path:
    """The same, trained with ``person`` held out."""
    from tasks.label_space.embed import text_embedder
    from tasks.model.train import train

    work_dir = tmp_path_factory.mktemp("held-out-run") / "work"
    embed = text_embedder("all-MiniLM-L6-v2", transfer_store.embedding_cache)
    train("demo", described_label_space, work_dir, demo_root, tiny_options(2), held_out=HELD_OUT, embed=embed)
    return work_dir
