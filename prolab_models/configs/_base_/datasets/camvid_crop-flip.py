# CamVid for a pretrained backbone at a few hundred iterations: 256x256 crops at the images' own scale
# and flips, no random rescaling and no photometric distortion. On camvid_mini (seed 0) dropping both
# took the EfficientNet-Lite0 Lite R-ASPP from 43.7 to 48.4 mIoU one-hot, from 39.8 to 50.5 with
# ProLab's heads (configs/README.md).
_base_ = ['./camvid.py']
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckLabelRange', num_classes=11),
    dict(type='RandomCrop', crop_size=(256, 256), cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=8, dataset=dict(pipeline=train_pipeline))
