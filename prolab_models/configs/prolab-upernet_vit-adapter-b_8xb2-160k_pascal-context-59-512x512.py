# ProLab, UPerNet + ViT-Adapter-B (DeiT-B) on Pascal Context 59 (paper: 58.2 mIoU), 512 crops.
_base_ = [
    './_base_/models/upernet_vit-adapter-b_prolab.py',
    'mmseg::_base_/datasets/pascal_context_59.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/schedules/schedule_160k_layer-decay.py',
]
custom_imports = dict(imports=['prolab_models.register'], allow_failed_imports=False)
crop_size = (512, 512)
img_scale = (520, 520)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=img_scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
model = dict(data_preprocessor=dict(size=crop_size))
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
