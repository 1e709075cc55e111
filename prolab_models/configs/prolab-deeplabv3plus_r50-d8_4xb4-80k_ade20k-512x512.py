# ProLab on DeepLabV3+ (ResNet-50-D8) on ADE20K, 80k iterations: the paper's "other architectures"
# comparison. Its one-hot twin with property heads instead of classifiers; nothing else changes.
_base_ = ['./deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py']
label_space = None
model = dict(
    type='PropertyEncoderDecoder',
    decode_head=dict(
        type='PropertyDepthwiseSeparableASPPHead',
        label_space=label_space,
        temperature=0.04,
        loss_decode=dict(_delete_=True, type='PropertyCosineLoss', loss_weight=1.0)),
    auxiliary_head=dict(
        type='PropertyFCNHead',
        label_space=label_space,
        temperature=0.04,
        loss_decode=dict(_delete_=True, type='PropertyCosineLoss', loss_weight=0.4)))
