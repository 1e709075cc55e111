"""Recompute BatchNorm running statistics on training batches (Wu & Johnson, "Rethinking
Batch in BatchNorm", 2021).

A short from-scratch run changes the weights faster than BN's exponential running averages
follow: evaluated in eval mode such a model scored 11.3 mIoU, the same weights with statistics
recomputed on training images 39.3. The hook replaces the running averages by the exact
averages over a few batches under the current weights, before each checkpoint and validation.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS
from torch.nn.modules.batchnorm import _BatchNorm


@HOOKS.register_module()
class PreciseBNHook(Hook):
    """Args:
        num_batches: training batches to average over (per process).
        interval: recompute every ``interval`` iterations (set it to the checkpoint and
            validation interval) and always after the last one.
    """

    # After the optimizer step, before CheckpointHook (VERY_LOW) saves and before validation.
    priority = "ABOVE_NORMAL"

    def __init__(self, num_batches: int = 20, interval: int = 1000) -> None:
        self.num_batches = num_batches
        self.interval = interval

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.every_n_train_iters(runner, self.interval) or self.is_last_train_iter(runner):
            # the training loop's own iterator: a second iterator over a DataLoader with
            # persistent workers would reset the loop's (it is the same object)
            batches = getattr(runner.train_loop, "dataloader_iterator", runner.train_dataloader)
            self.recompute(runner.model, batches)

    @torch.no_grad()
    def recompute(self, model: torch.nn.Module, batches: Iterable[dict]) -> None:
        model = model.module if is_model_wrapper(model) else model
        norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        seen = 0
        for batch in itertools.islice(batches, self.num_batches):
            data = model.data_preprocessor(batch, training=True)
            model(**data, mode="tensor")
            seen += 1
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
            if get_world_size() > 1:
                all_reduce(m.running_mean, op="mean")
                all_reduce(m.running_var, op="mean")
        print_log(f"PreciseBN: running stats of {len(norms)} BN layers recomputed on {seen} batches",
                  logger="current")
