# ProLab, UPerNet + ViT-Adapter-B (DeiT-B) on BDD100K (paper: 65.7 mIoU), 768 crops.
_base_ = [
    './_base_/models/upernet_vit-adapter-b_prolab.py',
    'mmseg::_base_/datasets/bdd100k.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/schedules/schedule_160k_layer-decay.py',
]
custom_imports = dict(imports=['prolab_models.register'], allow_failed_imports=False)
crop_size = (768, 768)
dataset_type = 'ProLabBDD100KDataset'
data_root = 'data/bdd100k'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 1024), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
model = dict(
    data_preprocessor=dict(size=crop_size),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(512, 512)))
# Folders by split name (not mmseg's data_prefix), so `prolab evaluate --split` picks them.
train_dataloader = dict(batch_size=2, dataset=dict(
    _delete_=True, type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(
    _delete_=True, type=dataset_type, data_root=data_root, split='val', pipeline={{_base_.test_pipeline}}))
test_dataloader = val_dataloader
