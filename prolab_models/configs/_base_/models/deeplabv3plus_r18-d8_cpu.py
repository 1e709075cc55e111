# mmseg's DeepLabV3+ on a ResNet-18-D8 (its deeplabv3plus_r18-d8 model) for CPU runs from scratch:
# random init, plain BN (one process; PreciseBNHook fixes its statistics), batches in channels-last
# memory order (up to 15 % off a CPU training step, configs/README.md). Datasets set num_classes.
_base_ = ['mmseg::_base_/models/deeplabv3plus_r50-d8.py']
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(type='ChannelsLastSegDataPreProcessor'),
    pretrained=None,
    backbone=dict(depth=18, norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=512, channels=128, c1_in_channels=64, c1_channels=12, num_classes=11, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=256, channels=64, num_classes=11, norm_cfg=norm_cfg))
