"""Importing this module registers every ProLab module in mmseg's registries (backbones,
heads, losses, segmentor, data preprocessor, datasets, transforms, metrics, hooks, optimiser
constructor) and lets ``torch.load(weights_only=True)`` read mmengine's checkpoints. Configs
name it in ``custom_imports``."""

from prolab_models import (  # noqa: F401
    backbones, data_preprocessors, datasets, decode_heads, engine, evaluation, losses, segmentors,
)
from prolab_models.checkpoint import allow_mmengine_checkpoints

allow_mmengine_checkpoints()
