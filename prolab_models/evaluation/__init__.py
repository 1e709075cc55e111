from prolab_models.evaluation.metrics import PerClassIoUMetric, PropertyMetric

__all__ = ["PerClassIoUMetric", "PropertyMetric"]
