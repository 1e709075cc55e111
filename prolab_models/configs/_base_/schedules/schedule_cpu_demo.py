# The CPU schedule, shortened to 300 iterations for the demo data.
_base_ = ['./schedule_cpu.py']
max_iters = 300
interval = 150
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=20),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=20, end=max_iters, by_epoch=False),
]
train_cfg = dict(max_iters=max_iters, val_interval=interval)
default_hooks = dict(checkpoint=dict(interval=interval))
custom_hooks = [dict(type='PreciseBNHook', num_batches=10, interval=interval)]
