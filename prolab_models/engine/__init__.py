from prolab_models.engine.layer_decay import ViTAdapterLayerDecayOptimizerConstructor
from prolab_models.engine.precise_bn import PreciseBNHook

__all__ = ["PreciseBNHook", "ViTAdapterLayerDecayOptimizerConstructor"]
