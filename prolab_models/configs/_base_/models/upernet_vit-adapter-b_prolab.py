# UPerNet + ViT-Adapter-B (DeiT-B) with ProLab's property heads: the paper's model.
# The label space is an input of the model: the runner sets it in both heads (and the metric).
custom_imports = dict(imports=['prolab_models.register'], allow_failed_imports=False)
label_space = None
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    test_cfg=dict(size_divisor=32))
model = dict(
    type='PropertyEncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='ViTAdapter',
        arch='base',
        pretrained='deit_base_patch16_224.fb_in1k',
        conv_inplane=64,
        n_points=4,
        deform_num_heads=12,
        cffn_ratio=0.25,
        deform_ratio=0.5,
        interaction_indexes=[[0, 2], [3, 5], [6, 8], [9, 11]],
        drop_path_rate=0.3,
        norm_cfg=norm_cfg),
    decode_head=dict(
        type='PropertyUPerHead',
        label_space=label_space,
        temperature=0.04,
        in_channels=[768, 768, 768, 768],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=512,
        dropout_ratio=0.1,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='PropertyCosineLoss', loss_weight=1.0)),
    auxiliary_head=dict(
        type='PropertyFCNHead',
        label_space=label_space,
        temperature=0.04,
        in_channels=768,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='PropertyCosineLoss', loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
