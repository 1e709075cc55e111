# The generated demo street scenes (data/demo.py; 7 classes, 128x160): random scale 0.75-1.5,
# 128x128 crops; whole-image tests.
_base_ = ['./camvid.py']
dataset_type = 'ProLabDemoDataset'
data_root = 'data/generated/demo'
num_classes = 7
crop_size = (128, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckLabelRange', num_classes=num_classes),
    dict(type='RandomResize', scale=(160, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckLabelRange', num_classes=num_classes),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=8, dataset=dict(type=dataset_type, data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
