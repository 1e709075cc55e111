# The one-hot baseline of the CPU model: same backbone and budget, mmseg's heads, cross-entropy.
_base_ = ['./upernet_vit-adapter-t_prolab_cpu.py']
model = dict(
    type='EncoderDecoder',
    decode_head=dict(
        _delete_=True,
        type='UPerHead',
        num_classes=11,
        in_channels=[192, 192, 192, 192],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=128,
        dropout_ratio=0.1,
        norm_cfg={{_base_.norm_cfg}},
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        _delete_=True,
        type='FCNHead',
        num_classes=11,
        in_channels=192,
        in_index=2,
        channels=64,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        norm_cfg={{_base_.norm_cfg}},
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)))
