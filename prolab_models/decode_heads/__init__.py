from prolab_models.decode_heads.property_head import (PropertyASPPHead, PropertyDepthwiseSeparableASPPHead,
                                                      PropertyFCNHead, PropertyLRASPPHead, PropertyOutputs,
                                                      PropertySegformerHead, PropertyUPerHead)

__all__ = ["PropertyASPPHead", "PropertyDepthwiseSeparableASPPHead", "PropertyFCNHead", "PropertyLRASPPHead",
           "PropertyOutputs", "PropertySegformerHead", "PropertyUPerHead"]
