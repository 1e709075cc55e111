# The one-hot (cross-entropy) baseline of the ProLab demo config: same backbone and budget.
_base_ = [
    './_base_/models/upernet_vit-adapter-t_cpu.py',
    './_base_/datasets/demo.py',
    './_base_/default_runtime_cpu.py',
    './_base_/schedules/schedule_cpu_demo.py',
]
custom_imports = dict(imports=['prolab_models.register'], allow_failed_imports=False)
crop_size = (128, 128)
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(num_classes=7),
    auxiliary_head=dict(num_classes=7))
