# The EfficientNet-Lite0 Lite R-ASPP CPU model with ProLab's property head instead of a classifier.
_base_ = ['./lraspp_efficientnet-lite0_cpu.py']
label_space = None
model = dict(
    type='PropertyEncoderDecoder',
    decode_head=dict(
        type='PropertyGlobalPoolLRASPPHead',
        label_space=label_space,
        temperature=0.04,
        loss_decode=dict(_delete_=True, type='PropertyCosineLoss', loss_weight=1.0)))
