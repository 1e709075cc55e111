# ProLab on SegFormer-MiT-B0 on ADE20K (the paper's "other architectures" table): the one-hot
# twin with a property head instead of the classifier; nothing else changes.
_base_ = ['./segformer_mit-b0_8xb2-160k_ade20k-512x512.py']
label_space = None
model = dict(
    type='PropertyEncoderDecoder',
    decode_head=dict(
        type='PropertySegformerHead',
        label_space=label_space,
        temperature=0.04,
        loss_decode=dict(_delete_=True, type='PropertyCosineLoss', loss_weight=1.0)))
