# ProLab on the generated demo data on a CPU: ViT-Adapter-T from scratch, 128x128 crops, 300 iterations.
_base_ = [
    './_base_/models/upernet_vit-adapter-t_prolab_cpu.py',
    './_base_/datasets/demo.py',
    './_base_/default_runtime_cpu.py',
    './_base_/schedules/schedule_cpu_demo.py',
]
custom_imports = dict(imports=['prolab_models.register'], allow_failed_imports=False)
crop_size = (128, 128)
# ProLab's cosine loss plus a cross-entropy over the cosine class scores on the decode head: measured
# better than the cosine loss alone on the demo and on CamVid at this budget (configs/README.md).
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(loss_decode=[dict(type='PropertyCosineLoss', loss_weight=1.0),
                                  dict(type='PropertyClassLoss', loss_weight=1.0)]))
