"""The model configs, and short names for them.

``resolve_config("camvid")`` -> the path of the CamVid CPU config; a path to an existing file
is returned as is, so users can pass their own config.
"""

from __future__ import annotations

from pathlib import Path

from prolab_models.errors import UnknownConfigError

CONFIG_DIR = Path(__file__).resolve().parent

CONFIGS: dict[str, str] = {
    # CPU: ViT-Adapter-T from scratch, minutes
    "demo": "prolab-upernet_vit-adapter-t_1xb8-300_demo-128x128.py",
    "demo_ce": "upernet_vit-adapter-t_1xb8-300_demo-128x128.py",
    "camvid": "prolab-upernet_vit-adapter-t_1xb4-400_camvid-256x256.py",
    "camvid_ce": "upernet_vit-adapter-t_1xb4-400_camvid-256x256.py",
    # the paper's: ViT-Adapter-B (DeiT-B), 8 GPUs x 2 images
    "ade20k": "prolab-upernet_vit-adapter-b_8xb2-320k_ade20k-512x512.py",
    "coco-stuff": "prolab-upernet_vit-adapter-b_8xb2-160k_coco-stuff164k-512x512.py",
    "pascal-context-59": "prolab-upernet_vit-adapter-b_8xb2-160k_pascal-context-59-512x512.py",
    "cityscapes": "prolab-upernet_vit-adapter-b_8xb2-160k_cityscapes-768x768.py",
    "bdd100k": "prolab-upernet_vit-adapter-b_8xb2-160k_bdd100k-768x768.py",
}


def resolve_config(name_or_path: str | Path) -> Path:
    """A short name from ``CONFIGS`` or a config file -> the config file's path."""
    if str(name_or_path) in CONFIGS:
        return CONFIG_DIR / CONFIGS[str(name_or_path)]
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.resolve()
    raise UnknownConfigError(
        f"config {str(name_or_path)!r}: not a known name nor an existing file; "
        f"known names: {', '.join(CONFIGS)}")
