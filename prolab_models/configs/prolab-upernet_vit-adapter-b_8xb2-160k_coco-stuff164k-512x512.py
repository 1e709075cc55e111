# ProLab, UPerNet + ViT-Adapter-B (DeiT-B) on COCO-Stuff-164k (paper: 45.4 mIoU).
_base_ = [
    './_base_/models/upernet_vit-adapter-b_prolab.py',
    'mmseg::_base_/datasets/coco-stuff164k.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/schedules/schedule_160k_layer-decay.py',
]
custom_imports = dict(imports=['prolab_models.register'], allow_failed_imports=False)
crop_size = (512, 512)
model = dict(data_preprocessor=dict(size=crop_size))
train_dataloader = dict(batch_size=2)
