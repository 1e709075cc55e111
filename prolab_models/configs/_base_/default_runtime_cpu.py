# mmseg's runtime, for CPU processes: gloo for distributed runs, no cudnn autotuning.
_base_ = ['mmseg::_base_/default_runtime.py']
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
