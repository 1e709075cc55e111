# The one-hot baseline: the same UPerNet + ViT-Adapter-B with mmseg's heads and cross-entropy.
# Datasets set num_classes.
_base_ = ['./upernet_vit-adapter-b_prolab.py']
model = dict(
    type='EncoderDecoder',
    decode_head=dict(
        _delete_=True,
        type='UPerHead',
        num_classes=150,
        in_channels=[768, 768, 768, 768],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=512,
        dropout_ratio=0.1,
        norm_cfg={{_base_.norm_cfg}},
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        _delete_=True,
        type='FCNHead',
        num_classes=150,
        in_channels=768,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        norm_cfg={{_base_.norm_cfg}},
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)))
