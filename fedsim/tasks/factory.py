"""Build the configured task."""

from __future__ import annotations

from fedsim.config import Config
from fedsim.data.federation import build_federation
from fedsim.tasks.base import Task
from fedsim.tasks.classification import ClassificationTask
from fedsim.tasks.scheduling import SchedulingTask


def build_task(config: Config) -> Task:
    """The task `config.task` names. Classification loads and partitions its data here (before
    any Ray start-up, so data errors surface first); scheduling draws its hospitals' profiles."""
    if config.scheduling is not None:
        return SchedulingTask(config.scheduling, config.seed, config.train.epochs)
    federation = build_federation(config.data, config.seed)
    return ClassificationTask(federation, config.model.name, config.train, config.eval.batch_size)
