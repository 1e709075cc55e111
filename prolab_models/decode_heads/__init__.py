from prolab_models.decode_heads.property_head import PropertyFCNHead, PropertyOutputs, PropertyUPerHead

__all__ = ["PropertyFCNHead", "PropertyOutputs", "PropertyUPerHead"]
