# The one-hot twin of ProLab's DeepLabV3+ on ADE20K: mmseg's own config, as it is.
_base_ = ['mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py']
custom_imports = dict(imports=['prolab_models.register'], allow_failed_imports=False)
