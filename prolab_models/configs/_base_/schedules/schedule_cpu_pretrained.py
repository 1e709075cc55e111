# A few hundred iterations on a CPU from an ImageNet backbone: AdamW 2e-3 with a 20-iteration warm-up,
# then poly; BN statistics recomputed (PreciseBNHook) before every checkpoint and validation, as from scratch.
_base_ = ['./schedule_cpu.py']
optim_wrapper = dict(optimizer=dict(lr=2e-3))
