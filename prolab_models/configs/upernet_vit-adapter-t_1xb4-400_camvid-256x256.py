# The one-hot (cross-entropy) baseline of the ProLab CamVid CPU config: same backbone and budget.
_base_ = [
    './_base_/models/upernet_vit-adapter-t_cpu.py',
    './_base_/datasets/camvid.py',
    './_base_/default_runtime_cpu.py',
    './_base_/schedules/schedule_cpu.py',
]
custom_imports = dict(imports=['prolab_models.register'], allow_failed_imports=False)
crop_size = (256, 256)
model = dict(data_preprocessor=dict(size=crop_size))
