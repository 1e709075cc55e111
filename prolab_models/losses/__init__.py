from prolab_models.losses.property_cosine_loss import PropertyCosineLoss

__all__ = ["PropertyCosineLoss"]
