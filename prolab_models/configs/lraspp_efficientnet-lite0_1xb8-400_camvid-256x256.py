# The one-hot (cross-entropy) twin of ProLab's CamVid CPU default: Lite R-ASPP on an ImageNet
# EfficientNet-Lite0, batch 8 of 256x256 crops and flips, 400 iterations.
_base_ = [
    './_base_/models/lraspp_efficientnet-lite0_cpu.py',
    './_base_/datasets/camvid_crop-flip.py',
    './_base_/default_runtime_cpu.py',
    './_base_/schedules/schedule_cpu_pretrained.py',
]
custom_imports = dict(imports=['prolab_models.register'], allow_failed_imports=False)
crop_size = (256, 256)
model = dict(data_preprocessor=dict(size=crop_size))
