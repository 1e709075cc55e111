# ProLab on the generated demo data on a CPU: DeepLabV3+ on a ResNet-18-D16 from scratch, batch 16 of
# 128x128 crops, 300 iterations.
_base_ = [
    './_base_/models/deeplabv3plus_r18-d16_prolab_cpu.py',
    './_base_/datasets/demo.py',
    './_base_/default_runtime_cpu.py',
    './_base_/schedules/schedule_cpu_demo.py',
]
custom_imports = dict(imports=['prolab_models.register'], allow_failed_imports=False)
crop_size = (128, 128)
# ProLab's cosine loss plus a cross-entropy over the cosine class scores on the decode head: with the
# cosine loss alone this model collapses road and tree at this budget (configs/README.md).
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(num_classes=7,
                     loss_decode=[dict(type='PropertyCosineLoss', loss_weight=1.0),
                                  dict(type='PropertyClassLoss', loss_weight=1.0)]),
    auxiliary_head=dict(num_classes=7))
train_dataloader = dict(batch_size=16)
