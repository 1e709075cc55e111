from prolab_models.losses.property_class_loss import PropertyClassLoss
from prolab_models.losses.property_cosine_loss import PropertyCosineLoss

__all__ = ["PropertyClassLoss", "PropertyCosineLoss"]
