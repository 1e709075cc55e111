from prolab_models.evaluation.metrics import CalibrationSweepMetric, PerClassIoUMetric, PropertyMetric

__all__ = ["CalibrationSweepMetric", "PerClassIoUMetric", "PropertyMetric"]
