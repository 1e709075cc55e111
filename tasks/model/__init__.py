"""The stages that train and use a model on a label space: train, evaluate; and the mmengine
run set-up they share (``runs``: configs, data roots; ``checkpoints``: where a run's checkpoint is)."""
