"""Training: the loop, evaluation schedule, optimizers, losses, checkpoints."""

from latephase.train.loop import LOSSES, OPTIMIZERS, eval_steps, train

__all__ = ["LOSSES", "OPTIMIZERS", "eval_steps", "train"]
