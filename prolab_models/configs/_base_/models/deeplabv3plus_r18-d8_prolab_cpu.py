# The ResNet-18-D8 DeepLabV3+ CPU model with ProLab's property heads instead of classifiers.
_base_ = ['./deeplabv3plus_r18-d8_cpu.py']
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
