"""Build the configured task."""

from __future__ import annotations

from typing import Any

from fedsim.config import Config
from fedsim.tasks.base import Task


def build_task(config: Config, dataset: Any = None) -> Task:
    """The task `config.task` names, built by its spec (classification loads and partitions its
    data here, before any Ray start-up, so data errors surface first). `dataset`: a user's own
    data for `data.source.kind: custom` (fedsim.data.custom)."""
    return config.task_spec().build(config, dataset)
