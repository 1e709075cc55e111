# ProLab on CamVid on a CPU: DeepLabV3+ on a ResNet-18-D16 from scratch, batch 6 of 256x256 crops,
# 400 iterations: about the time per iteration of the ViT-Adapter-T at batch 4 (configs/README.md).
_base_ = [
    './_base_/models/deeplabv3plus_r18-d16_prolab_cpu.py',
    './_base_/datasets/camvid.py',
    './_base_/default_runtime_cpu.py',
    './_base_/schedules/schedule_cpu.py',
]
custom_imports = dict(imports=['prolab_models.register'], allow_failed_imports=False)
crop_size = (256, 256)
# ProLab's cosine loss plus a cross-entropy over the cosine class scores on the decode head: measured
# better than the cosine loss alone on the demo and on CamVid at this budget (configs/README.md).
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(loss_decode=[dict(type='PropertyCosineLoss', loss_weight=1.0),
                                  dict(type='PropertyClassLoss', loss_weight=1.0)]))
train_dataloader = dict(batch_size=6)
