"""Build the configured task."""

from __future__ import annotations

from fedsim.config import Config
from fedsim.data.federation import build_federation
from fedsim.tasks.base import Task
from fedsim.tasks.classification import ClassificationTask


def build_task(config: Config) -> Task:
    """Load and partition the data (before any Ray start-up, so data errors surface first)."""
    federation = build_federation(config.data, config.seed)
    return ClassificationTask(federation, config.model.name, config.train, config.eval.batch_size)
