"""Pretraining: the resumable training engine, optimisers and learning-rate schedules.

`train_run(run, dataset_path, split_path, out_dir, log)` is what the workflow calls.
"""

from ssltrace.training.engine import train_run
from ssltrace.training.optim import LARS, build_optimizer
from ssltrace.training.schedule import Schedule, build_schedule

__all__ = ["LARS", "Schedule", "build_optimizer", "build_schedule", "train_run"]
