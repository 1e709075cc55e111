"""label_space_quality: how well the label spaces of the demo's and CamVid's classes separate them.

Side by side, for the demo (K = 16) and CamVid (K = 24) classes: the embedded Gemma-3-270M
with the few-shot prompt (method.md, ``PROMPT_VERSION``) and with the aspects prompt
(``ASPECTS_PROMPT_VERSION``), each without and with verification (``tasks.label_space.verify``
defaults), and the paper's GPT-3.5 Cityscapes descriptions mapped onto the same classes
(``shared/data/cityscapes_class_maps.json``). Each is embedded (all-MiniLM-L6-v2) and
clustered (k-means, seed 0) as the pipeline does. Figures per label space: the share of
lines whose nearest class sentence ("a photo of a {class}") is their own class's, the share
within cosine 0.7 of a worked-example line of the few-shot prompt, collisions,
the closest pair (highest multi-hot cosine, lowest Hamming distance), subset pairs, classes
with no property of their own, and for verified ones the lines dropped per reason. Before
them: what the verify defaults flag in the paper's four GPT-3.5 files (the calibration).

LLM answers are cached under ``$PROLAB_ARTIFACTS/.cache/llm`` (default ``artifacts/``) as
the describe stage caches them, so a rerun asks nothing. Each label space's descriptions
are written to ``$PROLAB_BENCH_OUT`` (default: a temporary directory, printed) as
``{dataset}_{condition}.json``, ready for ``prolab label-space --descriptors``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("PROLAB_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DESCRIPTORS = SHARED / "data" / "prolab_descriptors"
CLASS_MAPS = SHARED / "data" / "cityscapes_class_maps.json"
EMBEDDER = "all-MiniLM-L6-v2"
K = {"demo": 16, "camvid": 24}
SEED = 0


def mapped_gpt35(dataset: str) -> dict[str, list[str]]:
    """The paper's Cityscapes descriptions of the classes that describe each of ``dataset``'s classes."""
    cityscapes = json.loads((DESCRIPTORS / "cityscapes_bdd_gpt3.5.json").read_text())
    sources = json.loads(CLASS_MAPS.read_text())[dataset]
    return {name: [text for source in names for text in cityscapes[source]] for name, names in sources.items()}


def multi_hot_of(descriptions: dict[str, list[str]], k: int, cache: Path) -> np.ndarray:
    """Embed and cluster as the pipeline does; the class x property multi-hot."""
    from tasks.label_space.cluster import cluster_embeddings
    from tasks.label_space.descriptors import descriptions_table
    from tasks.label_space.embed import embed_descriptions
    from prolab_models.label_space import property_column

    table, _ = embed_descriptions(descriptions_table(descriptions), EMBEDDER, cache)
    clustering = cluster_embeddings(table, k, SEED)
    return clustering.class_properties[[property_column(i) for i in range(k)]].to_numpy()


def attributed_share(descriptions: dict[str, list[str]], cache: Path) -> float:
    """Percent of lines whose nearest class sentence ("a photo of a {class}") is their own class's."""
    from tasks.label_space.embed import embed_texts
    from tasks.label_space.verify import VerifyParams

    classes = list(descriptions)
    sentences = embed_texts([VerifyParams().class_sentence.format(name) for name in classes], EMBEDDER, cache)
    hits = total = 0
    for index, name in enumerate(classes):
        nearest = (embed_texts(descriptions[name], EMBEDDER, cache) @ sentences.T).argmax(axis=1)
        hits, total = hits + int((nearest == index).sum()), total + len(nearest)
    return 100 * hits / total


def example_like_share(descriptions: dict[str, list[str]], cache: Path, cosine: float = 0.7) -> float:
    """Percent of lines within ``cosine`` of a line of the few-shot prompt's worked examples
    (a looser bound than verify's copied rule: reworded copies such as "made of wood, metal
    or plastic" from the bench's "made of wooden slats, metal or stone" sit at 0.7 to 0.8)."""
    from tasks.label_space.embed import embed_texts
    from tasks.label_space.llm.prompts import EXAMPLES

    examples = embed_texts([line for lines in EXAMPLES.values() for line in lines], EMBEDDER, cache)
    lines = [text for texts in descriptions.values() for text in texts]
    return float(100 * ((embed_texts(lines, EMBEDDER, cache) @ examples.T).max(axis=1) >= cosine).mean())


def figures(descriptions: dict[str, list[str]], k: int, cache: Path) -> dict:
    from tasks.label_space.quality import quality_report

    classes = list(descriptions)
    multi_hot = multi_hot_of(descriptions, k, cache)
    quality = quality_report(classes, multi_hot, multi_hot.sum(axis=0))
    closest = quality["closest_pair"]
    owned = multi_hot[:, multi_hot.sum(axis=0) == 1].sum(axis=1)
    return {
        "lines": sum(map(len, descriptions.values())),
        "attributed": attributed_share(descriptions, cache),
        "example_like": example_like_share(descriptions, cache),
        "collisions": len(quality["collisions"]),
        "closest": f"{'/'.join(closest['classes'])} cos {closest['cosine']:.2f} ham {closest['hamming']}",
        "max_cosine": closest["cosine"],
        "min_hamming": quality["min_hamming"],
        "subsets": [f"{a}<{b}" for a, b in quality["subsets"]],
        "no_own_property": [name for name, n in zip(classes, owned) if n == 0],
        "nearest": {name: f"{near['class']} ({near['cosine']:.2f}, {near['hamming']})"
                    for name, near in quality["nearest"].items()},
    }


def describe_with_gemma(classes: list[str], prompt: str, cache: Path) -> dict[str, list[str]]:
    from tasks.label_space.describe import describe_classes
    from tasks.label_space.llm_server import local_llm_server

    with local_llm_server() as settings:
        return describe_classes(classes, settings.model_copy(update={"prompt": prompt}), cache).descriptions


def main() -> None:
    from tasks.datasets import dataset_classes
    from tasks.label_space.embed import embed_texts
    from tasks.label_space.llm.prompts import EXAMPLES
    from tasks.store import default_root
    from tasks.label_space.verify import flagged_counts, kept_descriptions, verify_descriptions
    from tasks.params import VerifyParams

    cache = Path(default_root()) / ".cache"
    out = Path(os.environ.get("PROLAB_BENCH_OUT") or tempfile.mkdtemp(prefix="prolab-label-space-quality-"))
    out.mkdir(parents=True, exist_ok=True)
    embed = partial(embed_texts, embedder=EMBEDDER, cache_dir=cache / "embeddings")
    params = VerifyParams()
    print(f"verify defaults: {params.model_dump()}")

    flagged_share = []
    for path in sorted(DESCRIPTORS.glob("*.json")):
        table = verify_descriptions(json.loads(path.read_text()), embed, params, examples=EXAMPLES)
        share = 100 * (~table["kept"]).mean()
        flagged_share.append(share)
        print(f"gpt3.5 {path.stem}: {len(table)} lines, flagged {share:.1f}% {flagged_counts(table)}")

    for dataset in ("demo", "camvid"):
        classes = dataset_classes(dataset)
        sources: dict[str, Callable[[], dict[str, list[str]]]] = {
            "gemma_fewshot": partial(describe_with_gemma, classes, "few-shot", cache / "llm"),
            "gemma_aspects": partial(describe_with_gemma, classes, "aspects", cache / "llm"),
            "gpt35": partial(mapped_gpt35, dataset),
        }
        for source, load in sources.items():
            written = load()
            table = verify_descriptions(written, embed, params, examples=EXAMPLES)
            for verified in (False, True):
                descriptions = kept_descriptions(table)[0] if verified else written
                condition = source + ("_verified" if verified else "")
                (out / f"{dataset}_{condition}.json").write_text(json.dumps(descriptions, indent=1))
                result = figures(descriptions, K[dataset], cache / "embeddings")
                dropped = flagged_counts(table) if verified else {}
                print(f"{dataset} {condition}: lines {result['lines']}, "
                      f"nearest to their own class {result['attributed']:.0f}%, "
                      f"near a worked example {result['example_like']:.0f}%, collisions {result['collisions']}, "
                      f"closest {result['closest']}, subsets {result['subsets'] or 'none'}, "
                      f"no own property {result['no_own_property'] or 'none'}"
                      + (f", dropped {dropped}" if verified else ""))
                print(f"  nearest: {result['nearest']}")
    print(f"descriptions written to {out}")
    print(f"gpt35_max_flagged_percent={max(flagged_share):.1f}")


if __name__ == "__main__":
    main()
