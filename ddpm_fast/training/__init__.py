"""Training: the Trainer, its config, objectives, EMA, global batches, checkpoints and log."""
