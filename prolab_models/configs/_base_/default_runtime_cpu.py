# mmseg's runtime, for CPU processes: gloo for distributed runs, no cudnn autotuning.
_base_ = ['mmseg::_base_/default_runtime.py']
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
# One seed for python, numpy and torch (mmengine draws a random one otherwise): a CPU run and
# its one-hot twin start from the same weights and see the same crops. Override with
# --cfg-options randomness.seed=N.
randomness = dict(seed=0)
