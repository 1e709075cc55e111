# ProLab on CamVid on a CPU: Lite R-ASPP on an ImageNet EfficientNet-Lite0 (packaged weights, offline),
# batch 8 of 256x256 crops and flips, 400 iterations (configs/README.md).
_base_ = [
    './_base_/models/lraspp_efficientnet-lite0_prolab_cpu.py',
    './_base_/datasets/camvid_crop-flip.py',
    './_base_/default_runtime_cpu.py',
    './_base_/schedules/schedule_cpu_pretrained.py',
]
custom_imports = dict(imports=['prolab_models.register'], allow_failed_imports=False)
crop_size = (256, 256)
# ProLab's cosine loss plus a cross-entropy over the cosine class scores, as the other CPU defaults.
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(loss_decode=[dict(type='PropertyCosineLoss', loss_weight=1.0),
                                  dict(type='PropertyClassLoss', loss_weight=1.0)]))
