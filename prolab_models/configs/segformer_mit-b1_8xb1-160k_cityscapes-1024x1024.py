# The one-hot twin of ProLab's SegFormer-MiT-B1 on Cityscapes: mmseg's own config, as it is.
_base_ = ['mmseg::segformer/segformer_mit-b1_8xb1-160k_cityscapes-1024x1024.py']
custom_imports = dict(imports=['prolab_models.register'], allow_failed_imports=False)
