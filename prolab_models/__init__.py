"""ProLab as an mmsegmentation plugin: importing it registers its modules in mmseg's registries
(``custom_imports = dict(imports=['prolab_models'])`` in a config)."""

from prolab_models import datasets  # noqa: F401
from prolab_models import backbones, decode_heads, engine, evaluation, losses, segmentors  # noqa: F401
from prolab_models.checkpoint import allow_mmengine_checkpoints

allow_mmengine_checkpoints()
