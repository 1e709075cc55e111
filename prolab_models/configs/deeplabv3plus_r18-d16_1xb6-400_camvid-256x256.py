# The one-hot (cross-entropy) twin of ProLab's DeepLabV3+ ResNet-18-D16 CamVid CPU config: same model
# and budget (batch 6 of 256x256 crops, 400 iterations).
_base_ = [
    './_base_/models/deeplabv3plus_r18-d16_cpu.py',
    './_base_/datasets/camvid.py',
    './_base_/default_runtime_cpu.py',
    './_base_/schedules/schedule_cpu.py',
]
custom_imports = dict(imports=['prolab_models.register'], allow_failed_imports=False)
crop_size = (256, 256)
model = dict(data_preprocessor=dict(size=crop_size))
train_dataloader = dict(batch_size=6)
