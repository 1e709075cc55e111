# ProLab, UPerNet + ViT-Adapter-B (DeiT-B) on Cityscapes (paper: 81.4 mIoU), 768 crops.
_base_ = [
    './_base_/models/upernet_vit-adapter-b_prolab.py',
    'mmseg::_base_/datasets/cityscapes_768x768.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/schedules/schedule_160k_layer-decay.py',
]
custom_imports = dict(imports=['prolab_models.register'], allow_failed_imports=False)
crop_size = (768, 768)
model = dict(
    data_preprocessor=dict(size=crop_size),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(512, 512)))
train_dataloader = dict(batch_size=2)
