"""Command-line entry for (distributed) training, like mmseg's ``tools/train.py``.

    python -m tasks.train_entry --config camvid --label-space LS --work-dir WD
    torchrun --nproc_per_node 2 -m tasks.train_entry --config demo ... --launcher pytorch

Every process runs the same call; mmengine's launcher sets up the process group (backend from
the config's ``env_cfg.dist_cfg``: gloo for the CPU configs, nccl for the GPU ones). Rank 0
prints the final checkpoint's path on stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mmengine.config import DictAction
from mmengine.dist import is_main_process

from tasks.train import train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a short name (demo, camvid, ade20k, ...) or a config file")
    parser.add_argument("--label-space", type=Path, required=True, help="the label space directory")
    parser.add_argument("--work-dir", type=Path, required=True, help="checkpoints and logs; resumed if it holds any")
    parser.add_argument("--data-root", type=Path, default=None, help="overrides the config's data_root")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default=None,
                        help="config overrides, key=value (e.g. train_cfg.max_iters=400)")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    args = parser.parse_args(argv)
    checkpoint = train(args.config, args.label_space, args.work_dir, args.data_root, args.cfg_options, args.launcher)
    if is_main_process():
        print(checkpoint)


if __name__ == "__main__":
    main()
