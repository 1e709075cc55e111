# ProLab, UPerNet + ViT-Adapter-B (DeiT-B) on ADE20K: the paper's 49.0 mIoU row (320k iterations).
_base_ = [
    './_base_/models/upernet_vit-adapter-b_prolab.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/schedules/schedule_160k_layer-decay.py',
]
custom_imports = dict(imports=['prolab_models.register'], allow_failed_imports=False)
crop_size = (512, 512)
max_iters = 320000
model = dict(data_preprocessor=dict(size=crop_size))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=max_iters, by_epoch=False),
]
train_cfg = dict(max_iters=max_iters)
train_dataloader = dict(batch_size=2)
