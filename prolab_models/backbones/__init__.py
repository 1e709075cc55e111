from prolab_models.backbones.ms_deform_attn import MSDeformAttn
from prolab_models.backbones.vit_adapter import ViTAdapter, vit_adapter_base, vit_adapter_small, vit_adapter_tiny

__all__ = ["MSDeformAttn", "ViTAdapter", "vit_adapter_base", "vit_adapter_small", "vit_adapter_tiny"]
