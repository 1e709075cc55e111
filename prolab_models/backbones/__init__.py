from prolab_models.backbones.ms_deform_attn import MSDeformAttn
from prolab_models.backbones.pretrained import PACKAGED_WEIGHTS, load_pretrained
from prolab_models.backbones.timm_features import TimmFeatures
from prolab_models.backbones.vit_adapter import ViTAdapter, vit_adapter_base, vit_adapter_small, vit_adapter_tiny

__all__ = ["MSDeformAttn", "PACKAGED_WEIGHTS", "TimmFeatures", "ViTAdapter", "load_pretrained", "vit_adapter_base",
           "vit_adapter_small", "vit_adapter_tiny"]
