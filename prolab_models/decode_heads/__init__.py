from prolab_models.decode_heads.lraspp import GlobalPoolLRASPPHead
from prolab_models.decode_heads.property_head import (PropertyASPPHead, PropertyDepthwiseSeparableASPPHead,
                                                      PropertyFCNHead, PropertyGlobalPoolLRASPPHead,
                                                      PropertyLRASPPHead, PropertyOutputs, PropertySegformerHead,
                                                      PropertyUPerHead)

__all__ = ["GlobalPoolLRASPPHead", "PropertyASPPHead", "PropertyDepthwiseSeparableASPPHead", "PropertyFCNHead",
           "PropertyGlobalPoolLRASPPHead", "PropertyLRASPPHead", "PropertyOutputs", "PropertySegformerHead",
           "PropertyUPerHead"]
