"""A pipeline step that stops training on a label map that does not belong to its image."""

from __future__ import annotations

from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from prolab_models.datasets.layout import DatasetLayoutError, check_label_values


@TRANSFORMS.register_module()
class CheckLabelRange(BaseTransform):
    """Fail when a label map holds values outside ``0..num_classes-1`` (other than
    ``ignore_index``) or differs in size from its image.

    Place it right after ``LoadAnnotations``: the transforms after it resize, crop and pad the
    image and the labels together, which would hide a size mismatch. It costs one pass over the
    label map, nothing next to a forward pass.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        label = results["gt_seg_map"]
        path = results.get("seg_map_path", "<label map>")
        if "img" in results and results["img"].shape[:2] != label.shape:
            image_h, image_w = results["img"].shape[:2]
            raise DatasetLayoutError(
                f"{path}: annotation is {label.shape[0]}x{label.shape[1]} (HxW) but its image "
                f"{results.get('img_path', '')} is {image_h}x{image_w}")
        check_label_values(label, self.num_classes, self.ignore_index, path)
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_classes={self.num_classes}, ignore_index={self.ignore_index})"
