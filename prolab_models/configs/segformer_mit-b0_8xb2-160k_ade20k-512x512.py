# The one-hot twin of ProLab's SegFormer-MiT-B0 on ADE20K: mmseg's own config, as it is.
_base_ = ['mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['prolab_models.register'], allow_failed_imports=False)
